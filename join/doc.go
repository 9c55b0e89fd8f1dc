// Package join turns the audience's phones into devices (issue 19).
//
// Where it sits in the flow: beside the dashboard, on its address. A phone
// asks POST /api/join and gets a device of its own, of type phone, in one
// of the regions: an id (ph-<8 hex digits>), its MQTT user name
// <region>/phone/<id> and a short-lived password (internal/devicecred,
// PhonePassword), and the broker's MQTT over WebSocket URL as the phone
// reaches it. The phone then publishes its readings like any device, on
// its own topic, through the broker, ingest, JetStream and storage; the
// broker checks the password and its end, and lets it publish nowhere
// else.
//
// What it holds: the phone key (devicecred.PhoneKey of the fleet secret),
// which makes phones' credentials only, and the phones it let join until
// their credentials end. Bounds, each refused with a clear answer: at most
// Config.MaxPhones phones at once (503), at most Config.MaxPerAddress
// from one client address (429; a venue's Wi-Fi puts many phones behind
// one address, so it is generous), each for Config.TTL.
//
// Not here yet: the phone's own page and its MQTT client, the QR code of
// the join link, the journey of a phone's reading, removing every phone
// at once.
package join
