// Package join turns the audience's phones into devices (issue 19).
//
// Where it sits in the flow: beside the dashboard, on its address. The
// presenter shows the join view (/join/show): the QR code of a join link,
// /join?t=<ticket>, which lets phones in for Config.LinkTTL. A phone that
// opens it gets its page (/join, embedded with mqtt.js from npm), which
// asks POST /api/join and gets a device of its own, of type phone, in one
// of the regions: an id (ph-<8 hex digits>), its MQTT user name
// <region>/phone/<id> and a short-lived password (internal/devicecred,
// PhonePassword), and the broker's MQTT over WebSocket URL as the phone
// reaches it. The phone then publishes its readings like any device, on
// its own topic, through the broker, ingest, JetStream and storage; the
// broker checks the password and its end, and lets it publish nowhere
// else. GET /api/journey, with the phone's own login, shows where its
// latest reading has been (Config.Tracer).
//
// What it holds: the phone key (devicecred.PhoneKey of the fleet secret),
// which makes phones' credentials and join links only, the phones it let
// join until their credentials end, and when the presenter last removed
// them (POST /api/join/remove: every credential and link issued until
// then stops working, and Config.Broker disconnects the phones). Bounds,
// each refused with a clear answer: at most Config.MaxPhones phones at
// once (503), at most Config.MaxPerAddress from one client address (429; a
// venue's Wi-Fi puts many phones behind one address, so it is generous),
// each for Config.TTL; an expired or withdrawn link gets 410 and a page
// saying to scan the code on the screen again.
//
// The broker the phones log in to (Config.Broker): the embedded broker
// checks their credentials itself (Embedded); Mosquitto cannot, so each
// phone becomes a client of its dynamic security plugin (Dynsec), deleted
// at its end. `telemetry dashboard --phones-ws-port` serves the phones
// beside Mosquitto (Flags, compose); `telemetry demo --mqtt-ws` beside its
// embedded broker. StreamTracer reads the journeys from the regions'
// READINGS and ClickHouse.
package join
