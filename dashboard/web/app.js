// The dashboard page: renders the snapshots pushed on /ws. No dependencies,
// no build step. Element ids are stable (rate-<region>, storage-state, ...)
// so browser tests can read them.
"use strict";

const HISTORY = 60;          // snapshots kept per region for the sparkline
const STALE_MS = 10000;      // no snapshot for this long: reconnect
const BACKOFF_MIN = 500, BACKOFF_MAX = 10000;

const history = new Map();   // region -> [rate, ...]
let regionsKey = "";
let lastSeq = -1;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function setText(id, text, cls) {
  const e = $(id);
  if (!e) return;
  if (e.textContent !== text) e.textContent = text;
  if (cls !== undefined && e.className !== cls) e.className = cls;
}

const fmtInt = (n) => Math.round(n).toLocaleString("en-US");
function fmtRate(r) {
  if (r >= 100) return fmtInt(r);
  return r.toLocaleString("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });
}
function fmtMS(ms) {
  if (ms >= 10000) return (ms / 1000).toFixed(0) + " s";
  if (ms >= 1000) return (ms / 1000).toFixed(1) + " s";
  return ms.toFixed(0) + " ms";
}
function fmtNum(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 0.01)) return v.toExponential(2);
  return v.toLocaleString("en-US", { maximumFractionDigits: 2 });
}

function row(key, id, value) {
  return el("div", { class: "row" }, el("span", { class: "k" }, key), el("span", { class: "v num", id }, value || "—"));
}

// buildCards makes one card per region, once per set of regions.
function buildCards(regions) {
  const key = regions.map((r) => r.region).join(",");
  if (key === regionsKey) return;
  regionsKey = key;
  const box = $("regions");
  box.replaceChildren();
  for (const r of regions) {
    const n = r.region;
    box.append(el("article", { class: "card", id: "card-" + n },
      el("h2", {}, el("span", {}, n), el("span", { class: "small muted", id: "dl-state-" + n }, "")),
      el("div", {}, el("span", { class: "rate num", id: "rate-" + n }, "—"), el("span", { class: "rate-unit" }, "readings/s")),
      el("canvas", { class: "spark", id: "spark-" + n, "aria-label": "readings per second, last " + HISTORY + " snapshots" }),
      row("total seen", "total-" + n),
      row("active devices", "active-" + n),
      row("latency p50", "p50-" + n),
      row("latency p99", "p99-" + n),
      row("replication lag", "repl-" + n),
      row("rejected", "rejected-" + n),
      el("ul", { class: "rejected-list", id: "rejected-list-" + n }),
    ));
  }
}

function renderRegion(r, replication) {
  const n = r.region;
  setText("rate-" + n, fmtRate(r.rate));
  setText("total-" + n, fmtInt(r.total));
  setText("active-" + n, fmtInt(r.active_devices));
  const lat = r.latency_ms || {};
  setText("p50-" + n, lat.samples ? fmtMS(lat.p50) : "—");
  setText("p99-" + n, lat.samples ? fmtMS(lat.p99) : "—");
  setText("rejected-" + n, fmtInt(r.rejected_total), r.rejected_total ? "v num warn-text" : "v num");
  setText("dl-state-" + n, r.deadletters === "ok" ? "" : "dead letters: " + r.deadletters,
    r.deadletters === "ok" ? "small muted" : "small warn-text");

  const list = $("rejected-list-" + n);
  const reasons = Object.entries(r.rejected || {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  list.replaceChildren(...reasons.map(([reason, count]) =>
    el("li", { id: "rejected-" + n + "-" + reason }, el("span", {}, reason), el("span", { class: "num" }, fmtInt(count)))));

  const lags = replication.filter((l) => l.to === n);
  if (lags.length === 0) {
    setText("repl-" + n, "—");
  } else {
    setText("repl-" + n, lags.map((l) => l.from + ": " + (l.connected
      ? fmtInt(l.messages) + " msgs, " + fmtMS(l.seconds * 1000)
      : "link down")).join(" · "), lags.some((l) => !l.connected) ? "v num bad-text" : "v num");
  }

  let h = history.get(n);
  if (!h) { h = []; history.set(n, h); }
  h.push(r.rate);
  if (h.length > HISTORY) h.splice(0, h.length - HISTORY);
  drawSpark($("spark-" + n), h);
}

function drawSpark(canvas, values) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (w === 0 || h === 0) return;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  if (values.length < 2) return;
  const top = Math.max(...values) || 1;
  const step = w / (HISTORY - 1);
  const x0 = w - (values.length - 1) * step;
  const y = (v) => h - 3 - (v / top) * (h - 8);
  ctx.beginPath();
  values.forEach((v, i) => (i === 0 ? ctx.moveTo(x0, y(v)) : ctx.lineTo(x0 + i * step, y(v))));
  ctx.lineWidth = 3;
  ctx.strokeStyle = "#4fc3ff";
  ctx.stroke();
  ctx.lineTo(w, h);
  ctx.lineTo(x0, h);
  ctx.closePath();
  ctx.fillStyle = "rgba(79, 195, 255, 0.18)";
  ctx.fill();
}

function renderStorage(s) {
  let text, cls = "storage-state", detail = "";
  switch (s.state) {
    case "off":
      text = "Storage is off: " + s.reason; cls += " warn-text"; break;
    case "offline":
      text = "storage offline"; cls += " bad-text"; detail = s.reason || ""; break;
    case "unknown":
      text = "storage: checking…"; cls += " muted"; break;
    default:
      text = fmtInt(s.readings_stored) + " readings stored";
      cls += s.state === "ok" ? " good-text" : " warn-text";
      detail = "state " + s.state + " · " + fmtInt(s.rows_stored) + " rows · " +
        fmtInt(s.consumer_pending) + " pending" + (s.last_insert ? " · last insert " + s.last_insert : "") +
        (s.error ? " · " + s.error : "");
  }
  setText("storage-state", text, cls);
  setText("storage-detail", detail);
}

function renderMetrics(snap) {
  setText("metrics-window", "last " + snap.window_seconds + " s: avg (min – max)");
  const regions = snap.regions.map((r) => r.region);
  const head = $("metrics-head");
  const headKey = regions.join(",");
  if (head.dataset.key !== headKey) {
    head.dataset.key = headKey;
    head.replaceChildren(el("th", {}, "metric"), ...regions.map((r) => el("th", {}, r)));
  }
  const names = [...new Set(snap.regions.flatMap((r) => (r.metrics || []).map((m) => m.name)))].sort();
  const byRegion = new Map(snap.regions.map((r) => [r.region, new Map((r.metrics || []).map((m) => [m.name, m]))]));
  $("metrics-body").replaceChildren(...names.map((name) => el("tr", { id: "metric-" + name },
    el("td", {}, name),
    ...regions.map((r) => {
      const m = byRegion.get(r).get(name);
      return el("td", { class: "num", id: "metric-" + r + "-" + name },
        m ? fmtNum(m.avg) + " (" + fmtNum(m.min) + " – " + fmtNum(m.max) + ")" : "—");
    }))));
}

function render(snap) {
  if (snap.seq === lastSeq) return;
  lastSeq = snap.seq;
  setText("domain", "reading from " + snap.domain);
  const nats = snap.nats || {};
  if (!nats.connected) {
    setText("nats-state", "NATS " + (nats.status || "down").toLowerCase(), "badge bad");
  } else if (nats.readings !== "ok") {
    setText("nats-state", "NATS: " + nats.readings, "badge warn");
  } else {
    setText("nats-state", "NATS ok", "badge good");
  }
  buildCards(snap.regions);
  const repl = snap.replication || [];
  for (const r of snap.regions) renderRegion(r, repl);
  renderStorage(snap.storage || {});
  renderMetrics(snap);
  setText("snapshot-seq", "snapshot " + snap.seq + " at " + new Date(snap.time).toLocaleTimeString());
  setText("clients", snap.clients + " viewer" + (snap.clients === 1 ? "" : "s"));
  setText("other", snap.undecodable ? snap.undecodable + " undecodable" : "");
}

function setConnected(ok) {
  setText("conn-state", ok ? "live" : "disconnected", ok ? "badge good" : "badge bad");
  const b = $("banner");
  b.hidden = ok;
  if (!ok) b.textContent = "disconnected from the dashboard server: reconnecting…";
}

// connect opens the websocket and reopens it with backoff whenever it
// closes or goes quiet.
let backoff = BACKOFF_MIN;
function connect() {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  let ws;
  try { ws = new WebSocket(url); } catch (e) { retry(); return; }
  let watchdog;
  const arm = () => {
    clearTimeout(watchdog);
    watchdog = setTimeout(() => ws.close(), STALE_MS);
  };
  ws.onopen = arm;
  ws.onmessage = (ev) => {
    arm();
    backoff = BACKOFF_MIN;
    setConnected(true);
    try { render(JSON.parse(ev.data)); } catch (e) { console.error("bad snapshot", e); }
  };
  ws.onclose = () => { clearTimeout(watchdog); setConnected(false); retry(); };
  ws.onerror = () => ws.close();
}
function retry() {
  const wait = backoff / 2 + Math.random() * backoff / 2;
  backoff = Math.min(backoff * 2, BACKOFF_MAX);
  setTimeout(connect, wait);
}

setConnected(false);
connect();
