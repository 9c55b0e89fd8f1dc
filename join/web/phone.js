"use strict";
// The phone's side: join (POST /api/join gives a device of type phone and
// a short-lived MQTT login), then publish one protocol v1 reading a second
// over MQTT on WebSocket, QoS 1, on the device's own topic. Each reading
// is counted when sent and when the broker acknowledges it; the counts are
// also on <body data-sent data-acked> for the tests.

const $ = (id) => document.getElementById(id);
const phone = {
  boot: Math.floor(Date.now() / 1000),
  seq: 0,
  sent: 0,
  acked: 0,
  sensors: { front: null, side: null, accel: null },
  client: null,
  timer: null,
  own: new Map(), // seq -> {sent, acked}: this phone's clock
  tracing: false,
};

window.addEventListener("deviceorientation", (e) => {
  if (e.beta != null) phone.sensors.front = e.beta;
  if (e.gamma != null) phone.sensors.side = e.gamma;
});
window.addEventListener("devicemotion", (e) => {
  const a = e.accelerationIncludingGravity;
  if (a && a.x != null) phone.sensors.accel = Math.hypot(a.x, a.y || 0, a.z || 0);
});

// iOS asks the user before a page may read the motion sensors.
if (typeof DeviceOrientationEvent !== "undefined" && typeof DeviceOrientationEvent.requestPermission === "function") {
  const b = $("phone-motion");
  b.hidden = false;
  b.onclick = () => DeviceOrientationEvent.requestPermission().finally(() => { b.hidden = true; });
}

function round(x) { return Math.round(x * 100) / 100; }

// reading measures the phone now; where the browser gives no sensor, a
// slow made-up wave stands in, so that every phone has a line to draw.
function reading(device) {
  const t = Date.now() / 1000;
  const s = phone.sensors;
  phone.seq++;
  return JSON.stringify({
    v: 1, device: device, boot: phone.boot, seq: phone.seq, ts: Date.now(),
    metrics: {
      tilt_front_deg: round(s.front ?? 20 * Math.sin(t / 3)),
      tilt_side_deg: round(s.side ?? 10 * Math.cos(t / 5)),
      accel_ms2: round(s.accel ?? 9.81 + 0.3 * Math.sin(t)),
    },
  });
}

function show() {
  $("phone-sent").textContent = phone.sent;
  $("phone-acked").textContent = phone.acked;
  document.body.dataset.sent = phone.sent;
  document.body.dataset.acked = phone.acked;
}

function fail(text) {
  const e = $("phone-error");
  e.textContent = text;
  e.hidden = false;
  document.body.dataset.error = text;
}

function publish(cred) {
  if (!phone.client || !phone.client.connected) return;
  const sentAt = Date.now();
  const seq = phone.seq + 1;
  phone.own.set(seq, { sent: sentAt });
  if (phone.own.size > 120) phone.own.delete(phone.own.keys().next().value);
  phone.client.publish(cred.topic, reading(cred.device), { qos: 1 }, (err) => {
    if (err) return; // published again by the client once it reconnects
    const own = phone.own.get(seq);
    if (own) own.acked = Date.now();
    phone.acked++;
    $("phone-last").textContent = "#" + seq + " sent " + new Date(sentAt).toLocaleTimeString() +
      ", acknowledged after " + (Date.now() - sentAt) + " ms";
    show();
  });
  phone.sent++;
  show();
}

function ms(d) { return (d >= 0 ? "+" : "") + Math.round(d) + " ms"; }

// clock is t (unix ms) as hh:mm:ss.mmm on this phone's clock.
function clock(t) {
  const d = new Date(t);
  const two = (n) => String(n).padStart(2, "0");
  return two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds()) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

// trace asks the pipeline where this phone's latest reading has been
// (GET /api/journey, with the phone's own login) and shows it: the phone's
// own steps by its clock, the pipeline's by the pipeline's, each after
// the one before.
async function trace(cred) {
  if (phone.tracing) return;
  phone.tracing = true;
  try {
    const resp = await fetch("/api/journey", { headers: { Authorization: "Basic " + btoa(cred.user + ":" + cred.password) } });
    if (!resp.ok) return;
    const j = await resp.json();
    const own = phone.own.get(j.seq) || {};
    const rows = [["sent by this phone", own.sent ? clock(own.sent) : "–"],
      ["acknowledged by the broker", own.sent && own.acked ? ms(own.acked - own.sent) : "–"]];
    let prev = null;
    let done = true;
    for (const h of j.hops) {
      if (!h.at) { rows.push([h.name, "not yet", true]); done = false; continue; }
      const at = Date.parse(h.at);
      rows.push([h.name, prev === null ? clock(at) : ms(at - prev)]);
      if (prev === null || h.name.startsWith("stored")) prev = at;
    }
    const table = $("phone-journey");
    table.replaceChildren(...[["reading #" + j.seq, ""]].concat(rows).map(([name, t, wait]) => {
      const tr = document.createElement("tr");
      if (wait) tr.className = "wait";
      const a = document.createElement("td"); a.textContent = name;
      const b = document.createElement("td"); b.className = "t"; b.textContent = t;
      tr.append(a, b);
      return tr;
    }));
    document.body.dataset.journeySeq = j.seq;
    document.body.dataset.journeyDone = done ? "1" : "";
    // A stopped phone traces its last reading until its journey is whole
    // (a trace asked before it stopped may answer for an earlier one).
    if (done && phone.stopped && j.seq >= phone.seq) clearInterval(phone.trace);
  } catch (e) {
    // the next acknowledgement asks again
  } finally {
    phone.tracing = false;
  }
}

// stopPhone stops publishing and resolves once every reading sent is
// acknowledged (or after 10 s): for a test, or a phone leaving.
window.stopPhone = function () {
  clearInterval(phone.timer);
  phone.stopped = true;
  return new Promise((resolve) => {
    const end = Date.now() + 10000;
    const check = () => (phone.acked >= phone.sent || Date.now() > end ? resolve({ sent: phone.sent, acked: phone.acked }) : setTimeout(check, 50));
    check();
  });
};

async function start() {
  if (typeof mqtt === "undefined") {
    fail("This build of the demo has no MQTT client for phones: run make web-deps, then make build.");
    return;
  }
  let resp;
  try {
    // The join link's ticket (?t=) lets this phone in.
    resp = await fetch("/api/join" + location.search, { method: "POST" });
  } catch (e) {
    fail("The demo does not answer: " + e);
    return;
  }
  if (!resp.ok) {
    fail((await resp.text()).trim() || resp.statusText);
    return;
  }
  const cred = await resp.json();
  $("phone-device").textContent = cred.device;
  $("phone-region").textContent = cred.region;
  document.body.dataset.device = cred.device;
  phone.client = mqtt.connect(cred.broker, {
    clientId: cred.client_id, username: cred.user, password: cred.password,
    protocolVersion: 4, clean: true, reconnectPeriod: 2000, connectTimeout: 10000,
  });
  phone.client.on("error", (err) => {
    // CONNACK 4 or 5 (bad user name or password, not authorized): the
    // credential ended, or the presenter removed the phones; dialling
    // again will not change that.
    if (err.code === 4 || err.code === 5 || Date.now() > Date.parse(cred.expires)) {
      fail("You are no longer a device: your time is up, or the presenter removed the phones. Scan the QR code on the screen to join again.");
      clearInterval(phone.timer);
      phone.client.end(true);
      return;
    }
    fail("The broker said: " + err.message);
  });
  phone.client.on("connect", () => { $("phone-error").hidden = true; });
  phone.timer = setInterval(() => publish(cred), 1000);
  phone.trace = setInterval(() => trace(cred), 2000);
}

start();
