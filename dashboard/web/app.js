// The dashboard page: renders the snapshots pushed on /ws and the history
// from /api/history, marks the presenter scenarios on the charts, shows
// their ledgers and, when the demo serves the presenter API, the presenter
// panel. No dependencies, no build step. Element ids are stable
// (rate-<region>, reach-<region>, storage-state, history-state,
// alert-region-<region>, ledger-lost, presenter-error, ...) and each chart
// lists the scenario markers it drew in data-markers, so browser tests can
// read them.
"use strict";

const SPARK_MS = 120000;     // time span of the per-region sparklines
const STALE_MS = 10000;      // no snapshot for this long: reconnect
const BACKOFF_MIN = 500, BACKOFF_MAX = 10000;
const HISTORY_MINUTES = 30;
const HISTORY_EVERY_MS = 15000;
const COLORS = ["#4fc3ff", "#ffb347", "#d59bff", "#3ddc84", "#ff7eb6", "#f4f7fb"];
// Replication lag above these is shown in yellow.
const SLOW_MSGS = 500, SLOW_SECONDS = 5;

const spark = new Map();     // region -> [[time ms, rate], ...]
let regionsKey = "";
let lastSeq = -1;
let lastSnap = null;
let connected = false;
let disconnectedSince = null;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function setText(id, text, cls) {
  const e = typeof id === "string" ? $(id) : id;
  if (!e) return;
  if (e.textContent !== text) e.textContent = text;
  if (cls !== undefined && e.className !== cls) e.className = cls;
}

const fmtInt = (n) => Math.round(n || 0).toLocaleString("en-US");
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
  if (a >= 100) return v.toLocaleString("en-US", { maximumFractionDigits: 0 });
  return v.toLocaleString("en-US", { maximumFractionDigits: 2 });
}
// fmtShort keeps three significant digits (at least the integer part), for
// the metrics table.
function fmtShort(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 0.01)) return v.toExponential(1);
  const digits = a >= 100 ? 0 : a >= 10 ? 1 : 2;
  return v.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}
// fmtTime is a wall-clock time as the audience reads it: 12:03:04.
const fmtTime = (t) => new Date(t).toLocaleTimeString("en-GB", { hour12: false });
function fmtAgo(t, now) {
  const s = Math.max(0, (now - new Date(t)) / 1000);
  if (s < 1.5) return "now";
  if (s < 90) return Math.round(s) + " s ago";
  return "at " + fmtTime(t);
}
const colorOf = (i) => COLORS[i % COLORS.length];

// stat is one figure of a card; an "extra" one gives way on a small
// projector (style.css).
function stat(key, id, extra) {
  return el("div", { class: extra ? "stat extra" : "stat" }, el("span", { class: "k" }, key), el("span", { class: "v num", id }, "—"));
}

// buildCards makes one card per region, once per set of regions.
function buildCards(regions) {
  const key = regions.map((r) => r.region).join(",");
  if (key === regionsKey) return;
  regionsKey = key;
  $("regions").replaceChildren(...regions.map((r) => {
    const n = r.region;
    return el("article", { class: "card", id: "card-" + n },
      el("h2", {}, el("span", {}, n), el("span", { class: "reach", id: "reach-" + n }, "")),
      el("div", { class: "live" },
        el("div", { class: "rate-line" }, el("span", { class: "rate num", id: "rate-" + n }, "—"),
          el("span", { class: "rate-unit" }, "readings/s"), el("span", { class: "ingest-rate muted", id: "ingest-" + n }, "")),
        el("div", { class: "card-alert bad-text", id: "alert-" + n, hidden: true }),
        el("canvas", { class: "spark", id: "spark-" + n, "aria-label": "readings per second, last " + SPARK_MS / 1000 + " s" }),
        el("div", { class: "stats" },
          stat("devices", "active-" + n),
          stat("rejected", "rejected-" + n),
          stat("latency p50", "p50-" + n, "extra"),
          stat("latency p99", "p99-" + n),
          stat("last", "last-" + n),
          stat("seen", "total-" + n, "extra")),
        el("ul", { class: "rejected-list", id: "rejected-list-" + n })));
  }));
}

function renderRegion(r, snap) {
  const n = r.region;
  const now = new Date(snap.time);
  const down = !r.reachable && r.unreachable_since;
  $("card-" + n).className = down ? "card down" : r.alert ? "card alerted" : "card";
  const alertEl = $("alert-" + n);
  alertEl.hidden = !r.alert;
  if (r.alert && alertEl.textContent !== r.alert) alertEl.textContent = r.alert;
  // What the region's own ingest takes in, whatever happens downstream.
  setText("ingest-" + n, r.ingest ? "ingest " + fmtRate(r.ingest.rate) + "/s" : "", "ingest-rate muted");
  if (down) {
    setText("reach-" + n, "UNREACHABLE since " + fmtTime(r.unreachable_since), "reach bad-text");
  } else if (!r.reachable) {
    setText("reach-" + n, "connecting…", "reach muted");
  } else {
    setText("reach-" + n, "● reachable", "reach good-text");
  }
  setText("rate-" + n, fmtRate(r.rate));
  setText("total-" + n, fmtInt(r.total));
  setText("active-" + n, fmtInt(r.active_devices) + (r.active_phones ? " · " + fmtInt(r.active_phones) + " phones" : ""));
  const lat = r.latency_ms || {};
  setText("p50-" + n, lat.samples ? fmtMS(lat.p50) : "—");
  setText("p99-" + n, lat.samples ? fmtMS(lat.p99) : "—", lat.p99 > 5000 ? "v num warn-text" : "v num");
  setText("rejected-" + n, fmtInt(r.rejected_total), r.rejected_total ? "v num warn-text" : "v num");
  const stale = r.last_reading && now - new Date(r.last_reading) > 5000;
  setText("last-" + n, r.last_reading ? fmtAgo(r.last_reading, now) : "none yet", stale ? "v num bad-text" : "v num");

  const reasons = Object.entries(r.rejected || {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  $("rejected-list-" + n).replaceChildren(...reasons.map(([reason, count]) =>
    el("li", { id: "rejected-" + n + "-" + reason }, reason + " " + fmtInt(count))));

  let h = spark.get(n);
  if (!h) { h = []; spark.set(n, h); }
  const t = now.getTime();
  h.push([t, r.rate]);
  while (h.length && h[0][0] < t - SPARK_MS) h.shift();
  drawSpark($("spark-" + n), h, t, snap.scenarios || []);
}

// sizeCanvas matches the canvas' pixels to its size on screen.
function sizeCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (w === 0 || h === 0) return null;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return { ctx, w, h };
}

// drawSpark draws the last SPARK_MS of a region's rate, ending at now,
// behind it the scenarios that ran meanwhile.
function drawSpark(canvas, points, now, scenarios) {
  const c = sizeCanvas(canvas);
  if (!c) return;
  const { ctx, w, h } = c;
  const t0 = now - SPARK_MS;
  const x = (t) => (t - t0) / SPARK_MS * w;
  setMarkers(canvas, drawMarkers(ctx, scenarios, t0, now, x, 0, h, now, 14));
  // What is drawn, for the browser tests: the rates, rounded.
  canvas.dataset.rates = points.map((p) => Math.round(p[1])).join(",");
  if (points.length < 2) return;
  const top = Math.max(...points.map((p) => p[1])) || 1;
  const y = (v) => h - 3 - (v / top) * (h - 20);
  ctx.beginPath();
  points.forEach(([t, v], i) => (i === 0 ? ctx.moveTo(x(t), y(v)) : ctx.lineTo(x(t), y(v))));
  ctx.lineWidth = 3;
  ctx.strokeStyle = "#4fc3ff";
  ctx.stroke();
  ctx.lineTo(x(points[points.length - 1][0]), h);
  ctx.lineTo(x(points[0][0]), h);
  ctx.closePath();
  ctx.fillStyle = "rgba(79, 195, 255, 0.2)";
  ctx.fill();
}

// drawMarkers draws each scenario that overlaps [t0, t1] as a band from
// its start to its end (now while it runs), with a line at each end and
// its name at the top, and returns the names drawn. x maps a time (ms) to
// a canvas x; top and bottom bound the bands.
function drawMarkers(ctx, scenarios, t0, t1, x, top, bottom, now, fontPx) {
  const drawn = [];
  // Labels never overlap: each goes on the first line down where it
  // clears the label before it, at most three lines; with none free, the
  // band goes without its name (the list of runs is in the presenter
  // panel and the ledger). Where each label went is kept in
  // canvas.dataset.labels for the browser tests.
  const lineEnds = [-Infinity, -Infinity, -Infinity];
  const boxes = [];
  ctx.save();
  ctx.font = "800 " + fontPx + "px system-ui, sans-serif";
  ctx.textBaseline = "top";
  for (const m of scenarios) {
    const start = new Date(m.start).getTime();
    const end = m.end ? new Date(m.end).getTime() : now;
    if (end < t0 || start > t1) continue;
    const xa = x(Math.max(start, t0)), xb = Math.max(x(Math.min(end, t1)), xa + 3);
    ctx.fillStyle = "rgba(255, 204, 51, 0.18)";
    ctx.fillRect(xa, top, xb - xa, bottom - top);
    ctx.strokeStyle = "#ffcc33";
    ctx.lineWidth = 2;
    if (start >= t0) { ctx.beginPath(); ctx.moveTo(xa, top); ctx.lineTo(xa, bottom); ctx.stroke(); }
    if (m.end && end <= t1) {
      ctx.setLineDash([5, 4]);
      ctx.beginPath(); ctx.moveTo(xb, top); ctx.lineTo(xb, bottom); ctx.stroke();
      ctx.setLineDash([]);
    }
    const label = m.scenario + (m.end ? "" : " …");
    const right = x(t1);
    const tw = ctx.measureText(label).width;
    const lx = Math.max(0, Math.min(xa + 4, right - tw - 2));
    const line = lineEnds.findIndex((e) => lx > e + 6);
    if (line >= 0 && top + 2 + (line + 1) * (fontPx + 3) <= bottom) {
      const ly = top + 2 + line * (fontPx + 3);
      ctx.fillStyle = "#ffcc33";
      ctx.fillText(label, lx, ly);
      lineEnds[line] = lx + tw;
      boxes.push([lx, ly, tw, fontPx].map(Math.round).join(","));
    }
    drawn.push(m.scenario);
  }
  ctx.restore();
  ctx.canvas.dataset.labels = boxes.join(";");
  return drawn;
}

function setMarkers(canvas, names) {
  const v = names.join(",");
  if (canvas.dataset.markers !== v) canvas.dataset.markers = v;
}

function renderReplication(snap) {
  const regions = snap.regions.map((r) => r.region);
  const lags = new Map((snap.replication || []).map((l) => [l.from + ">" + l.to, l]));
  const rows = [el("tr", {}, el("th", {}, "to \\ from"), ...regions.map((r) => el("th", {}, r)))];
  for (const to of regions) {
    rows.push(el("tr", {}, el("th", {}, to), ...regions.map((from) => {
      const id = "repl-" + from + "-" + to;
      if (from === to) return el("td", { class: "self", id }, "—");
      const l = lags.get(from + ">" + to);
      if (!l) return el("td", { class: "muted", id }, "…");
      // The state word the server gives (stream status says the same),
      // with how far behind, so that a cut shows its backlog growing.
      const state = l.state || (l.connected ? "up" : "down");
      const title = state + (l.error ? ": " + l.error : "");
      if (state === "down") {
        return el("td", { class: "down", id, title }, "down",
          el("span", { class: "sub" }, fmtInt(l.messages) + " msgs"),
          el("span", { class: "sub" }, l.heard_ago >= 0 ? "heard " + fmtMS(l.heard_ago * 1000) + " ago" : fmtMS(l.seconds * 1000) + " behind"));
      }
      if (state === "idle") return el("td", { class: "ok", id, title }, "idle");
      const slow = state === "catching up" || l.messages > SLOW_MSGS || l.seconds > SLOW_SECONDS;
      return el("td", { class: slow ? "slow num" : "ok num", id, title },
        fmtInt(l.messages), el("span", { class: "sub" }, fmtMS(l.seconds * 1000)));
    })));
  }
  $("replication-body").replaceChildren(...rows);
}

function renderStorage(s, now) {
  let text, cls = "storage-state", detail = "", stats = [];
  const since = s.since ? " since " + fmtTime(s.since) : "";
  switch (s.state) {
    case "off":
      text = "Storage off"; cls += " warn-text"; detail = s.reason || ""; break;
    case "offline":
      text = "Storage offline" + since; cls += " bad-text"; detail = s.reason || ""; break;
    case "unknown": case undefined:
      text = "Storage: checking…"; cls += " muted"; break;
    default:
      // "writing" only while inserts happen: a stopped pipeline upstream
      // leaves storage ok but idle, and the page says so.
      const idle = s.state === "ok" && (!s.last_insert || now - new Date(s.last_insert) > 10000);
      text = s.state !== "ok" ? "Storage " + s.state + since :
        idle ? "Storage idle: " + (s.last_insert ? "last insert " + fmtAgo(s.last_insert, now) : "nothing stored yet") : "Storage writing";
      cls += s.state === "ok" && !idle ? " good-text" : " warn-text";
      stats = [
        ["readings stored", fmtInt(s.readings_stored), "storage-readings"],
        ["pending (lag)", fmtInt(s.consumer_pending), "storage-pending"],
        ["last insert", s.last_insert ? fmtAgo(s.last_insert, now) : "none yet", "storage-last"],
      ];
      if (s.discarded) stats.push(["lost to the stream budget", fmtInt(s.discarded), "storage-discarded"]);
      detail = fmtInt(s.rows_stored) + " rows (one per metric)" + (s.error ? " · " + s.error : "");
      if (s.region && s.home_region && s.region !== s.home_region) {
        text += " from " + s.region + " (failed over)"; cls = "storage-state warn-text";
      } else if (s.region) {
        detail = "from " + s.region + " · " + detail;
      }
  }
  setText("storage-state", text, cls);
  setText("storage-detail", detail);
  const box = $("storage-stats");
  const key = stats.map((x) => x.join("|")).join(";");
  if (box.dataset.key !== key) {
    box.dataset.key = key;
    box.replaceChildren(...stats.map(([k, v, id]) =>
      el("div", {}, el("div", { class: "k" }, k), el("div", { class: "v num", id }, v))));
  }
}

function renderMetrics(snap) {
  setText("metrics-window", "last " + snap.window_seconds + " s: avg  (p95 · min–max)");
  const regions = snap.regions.map((r) => r.region);
  const head = $("metrics-head");
  const headKey = regions.join(",");
  if (head.dataset.key !== headKey) {
    head.dataset.key = headKey;
    head.replaceChildren(el("th", {}, "metric"), ...regions.map((r) => el("th", {}, r)));
  }
  const keyOf = (m) => m.name + "/" + m.device_type;
  const rows = new Map();
  for (const r of snap.regions) for (const m of r.metrics || []) rows.set(keyOf(m), m);
  const byRegion = new Map(snap.regions.map((r) => [r.region, new Map((r.metrics || []).map((m) => [keyOf(m), m]))]));
  const keys = [...rows.keys()].sort();
  $("metrics-body").replaceChildren(...keys.map((k) => {
    const m = rows.get(k);
    return el("tr", { id: "metric-" + m.device_type + "-" + m.name },
      el("td", {}, el("span", { class: "val" }, m.name), el("span", { class: "sub" }, m.device_type)),
      ...regions.map((r) => {
        const x = byRegion.get(r).get(k);
        return el("td", { class: "num", id: "metric-" + r + "-" + m.device_type + "-" + m.name },
          x ? el("span", { class: "val" }, fmtShort(x.avg)) : "—",
          x ? el("span", { class: "sub" }, fmtShort(x.p95) + " · " + fmtShort(x.min) + "–" + fmtShort(x.max)) : null);
      }));
  }));
}

// renderAlerts lists, in big type, what is wrong right now.
let alertsKey = "";
function renderAlerts(snap) {
  const alerts = [];
  if (!connected) {
    alerts.push(["alert-conn", "bad", "Dashboard server unreachable" +
      (disconnectedSince ? " since " + fmtTime(disconnectedSince) : "") + ": numbers below are frozen, reconnecting…"]);
  }
  if (snap) {
    const nats = snap.nats || {};
    if (!nats.connected) {
      alerts.push(["alert-nats", "bad", "Dashboard lost NATS (" + (nats.status || "down").toLowerCase() + "): no live readings"]);
    } else {
      for (const r of snap.regions) {
        if (!r.reachable && r.unreachable_since) {
          alerts.push(["alert-region-" + r.region, "bad", r.region + " unreachable since " + fmtTime(r.unreachable_since)]);
        } else if (r.alert) {
          alerts.push(["alert-region-" + r.region, "bad", r.alert]);
        }
      }
    }
    const s = snap.storage || {};
    if (s.state === "offline") {
      alerts.push(["alert-storage", "bad", "Storage offline" + (s.since ? " since " + fmtTime(s.since) : "") + ": readings wait in JetStream"]);
    } else if (s.state && !["ok", "off", "unknown"].includes(s.state)) {
      alerts.push(["alert-storage", "warn", "Storage " + s.state + (s.since ? " since " + fmtTime(s.since) : "") + (s.error ? ": " + s.error : "")]);
    }
  }
  const key = JSON.stringify(alerts);
  if (key === alertsKey) return;
  alertsKey = key;
  $("alerts").replaceChildren(...alerts.map(([id, cls, text]) => el("div", { id, class: "alert " + cls }, text)));
}

function render(snap) {
  if (snap.seq === lastSeq) return;
  lastSeq = snap.seq;
  const prev = lastSnap;
  lastSnap = snap;
  const now = new Date(snap.time);
  setText("clock", fmtTime(snap.time));
  if (snap.home_domain && snap.domain !== snap.home_domain) {
    setText("domain", "reading from " + snap.domain + " (" + snap.home_domain + " unreachable, failed over)", "warn-text");
  } else {
    setText("domain", "reading from " + snap.domain, "muted");
  }
  const nats = snap.nats || {};
  if (!nats.connected) {
    setText("nats-state", "NATS " + (nats.status || "down").toLowerCase(), "badge bad");
  } else if (nats.readings !== "ok") {
    setText("nats-state", "NATS: " + nats.readings, "badge warn");
  } else {
    setText("nats-state", "NATS ok", "badge good");
  }
  buildCards(snap.regions);
  for (const r of snap.regions) renderRegion(r, snap);
  renderReplication(snap);
  renderStorage(snap.storage || {}, now);
  renderMetrics(snap);
  renderAlerts(snap);
  renderTabs(snap);
  renderScenario(snap);
  renderPresenter(snap);
  const mk = JSON.stringify(snap.scenarios || []);
  if (mk !== markersKey) { markersKey = mk; drawHistory(); }
  const st = (snap.storage || {}).state, was = prev && (prev.storage || {}).state;
  if (!historyMetric) {
    // Nothing to chart yet; still say whether there could be history.
    if (st === "off") showHistoryState("history unavailable: storage off", "warn-text");
    else if (st === "offline") showHistoryState("history unavailable: storage offline", "bad-text");
    else showHistoryState("waiting for the first readings", "muted");
  } else if (st !== was) {
    loadHistory(); // storage came or went: the chart says so now
  }
  setText("snapshot-seq", "snapshot " + snap.seq + " at " + fmtTime(snap.time));
  setText("clients", snap.clients + " viewer" + (snap.clients === 1 ? "" : "s"));
  setText("other", snap.undecodable ? "· " + snap.undecodable + " undecodable" : "");
}

// The scenario card: the running scenario's phase, then the ledger it ended
// with, until the next one starts or a viewer dismisses it.
const DISMISSED_KEY = "telemetry.ledgerDismissed";
let markersKey = "";
let scenarioKey = "";

function renderScenario(snap) {
  const card = $("ledger");
  const running = (snap.scenarios || []).filter((m) => !m.end).pop();
  const l = snap.ledger;
  let key = "";
  if (running) key = "run " + running.run + " running";
  else if (l) key = "run " + l.run + " done";
  if (!key || sessionStorage.getItem(DISMISSED_KEY) === key) {
    card.hidden = true;
    scenarioKey = key;
    return;
  }
  card.hidden = false;
  if (running) {
    card.className = "ledger running";
    setText("ledger-title", "▶ " + running.scenario + " running");
    $("ledger-nums").hidden = true;
    setText("ledger-detail", running.phase + " · since " + fmtTime(running.start));
  } else {
    const ok = l.ok && l.lost === 0;
    card.className = "ledger " + (ok ? "ok" : "bad");
    const verdict = ok ? "✔ " + l.label + ": nothing lost"
      : l.lost > 0 ? "✘ " + l.label + ": " + fmtInt(l.lost) + " LOST" : "✘ " + l.label + ": FAILED";
    setText("ledger-title", verdict);
    $("ledger-nums").hidden = false;
    setText("ledger-sent", fmtInt(l.sent));
    setText("ledger-stored", fmtInt(l.stored));
    setText("ledger-quarantined", fmtInt(l.quarantined));
    setText("ledger-lost", fmtInt(l.lost));
    let detail = fmtInt(l.acked) + " acknowledged by the broker, all owed";
    if (l.hostile_sent) detail += " · " + fmtInt(l.hostile_sent) + " hostile messages sent";
    if (l.duplicates_suppressed) {
      detail += " · " + fmtInt(l.duplicates_suppressed) + " duplicates suppressed";
      if (l.duplicated_top && l.duplicated_top.length) detail += " (" + l.duplicated_top.join(", ") + ")";
    }
    detail += " · run " + l.run + ", ended " + fmtTime(l.end);
    if (l.error) detail += " · " + l.error;
    setText("ledger-detail", detail);
  }
  scenarioKey = key;
}

$("ledger-dismiss").onclick = () => {
  sessionStorage.setItem(DISMISSED_KEY, scenarioKey);
  $("ledger").hidden = true;
};

// The presenter panel: only when the demo serves the presenter API. The
// token is typed once, or comes in the address as #token=..., and is kept
// for the browser tab's session (sessionStorage), never in the page's
// address or in a snapshot.
const TOKEN_KEY = "telemetry.presenterToken";
const HIDDEN_KEY = "telemetry.presenterHidden";
const PRESENTER_POLL_MS = 2000;
let presenterOn = false;
let presenterToken = sessionStorage.getItem(TOKEN_KEY) || "";
let presenterTimer = null;
let presenterPolling = false; // a poll is in flight
let presenterState = null;
let specsKey = "";

function takeTokenFromAddress() {
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (!m) return;
  history.replaceState(null, "", location.pathname + location.search);
  let token = m[1];
  try { token = decodeURIComponent(token); } catch (e) { /* keep it as typed */ }
  useToken(token);
}
window.addEventListener("hashchange", takeTokenFromAddress);

// presenterError shows text in the panel, or, when text is empty, the
// refusal of the presenter's last action: a refused scenario stays shown
// until the next action, whatever the polls in between say.
let actionRefusal = "";
function presenterError(text) {
  const e = $("presenter-error");
  const shown = text || actionRefusal;
  e.hidden = !shown;
  setText(e, shown);
}

// presenterFetch calls the presenter API with the token; it answers
// [status, body], status 0 when the demo did not answer.
async function presenterFetch(method, path, token) {
  try {
    const resp = await fetch(path, { method, cache: "no-store", headers: { Authorization: "Bearer " + token } });
    let body = {};
    try { body = await resp.json(); } catch (e) { /* not JSON */ }
    return [resp.status, body];
  } catch (e) {
    return [0, { error: "the demo does not answer" }];
  }
}

function refused(status, body) {
  if (status === 401) return "token refused (401 Unauthorized): use the demo's --presenter-token";
  return (status ? status + ": " : "") + (body.error || "the presenter API failed");
}

// useToken checks token against the API and keeps it if it is accepted.
async function useToken(token) {
  if (!token) return;
  const [status, body] = await presenterFetch("GET", "/api/scenario", token);
  if (status !== 200) {
    presenterError(refused(status, body));
    if (status === 401) forgetToken(false);
    return;
  }
  presenterToken = token;
  actionRefusal = "";
  sessionStorage.setItem(TOKEN_KEY, token);
  $("presenter-token").value = "";
  presenterError("");
  showPresenterState(body);
  renderPresenter(lastSnap);
}

function forgetToken(clearError) {
  if (clearError) actionRefusal = "";
  presenterToken = "";
  sessionStorage.removeItem(TOKEN_KEY);
  presenterState = null;
  clearTimeout(presenterTimer);
  presenterTimer = null;
  if (clearError) presenterError("");
  renderPresenter(lastSnap);
}

async function pollPresenter() {
  clearTimeout(presenterTimer);
  presenterTimer = null;
  if (!presenterOn || !presenterToken || presenterPolling) return;
  const token = presenterToken;
  presenterPolling = true;
  let status, body;
  try {
    [status, body] = await presenterFetch("GET", "/api/scenario", token);
  } finally {
    presenterPolling = false;
  }
  if (token !== presenterToken || !presenterOn) return;
  if (status === 200) {
    presenterError("");
    showPresenterState(body);
  } else {
    presenterError(refused(status, body));
    if (status === 401) { forgetToken(false); return; }
  }
  presenterTimer = setTimeout(pollPresenter, PRESENTER_POLL_MS);
}

// renderPresenter shows or hides the panel as the snapshot says, and the
// token form or the controls.
function renderPresenter(snap) {
  const on = !!(snap && snap.presenter);
  const hiddenByViewer = sessionStorage.getItem(HIDDEN_KEY) === "1";
  $("presenter").hidden = !on || hiddenByViewer;
  $("presenter-toggle").hidden = !on || !hiddenByViewer;
  if (on !== presenterOn) {
    presenterOn = on;
    if (!on) { clearTimeout(presenterTimer); presenterTimer = null; }
  }
  if (!on) return;
  const unlocked = !!presenterToken;
  $("presenter-join").hidden = !snap.join;
  $("presenter-remove-phones").hidden = !snap.join;
  // The join link's QR code, fresh each minute, for the audience to scan
  // off the projected page.
  const qr = $("presenter-join-qr");
  qr.hidden = !(snap.join && unlocked);
  if (!qr.hidden && !(Date.now() - Number(qr.dataset.at || 0) < 60000)) {
    qr.dataset.at = Date.now();
    qr.src = "/join/qr.png?at=" + qr.dataset.at;
  }
  $("presenter-login").hidden = unlocked;
  $("presenter-controls").hidden = !unlocked;
  if (unlocked && !presenterTimer && !presenterPolling) presenterTimer = setTimeout(pollPresenter, 0);
  const select = $("presenter-region");
  const regions = snap.regions.map((r) => r.region);
  if (select.dataset.key !== regions.join(",")) {
    select.dataset.key = regions.join(",");
    const keep = select.value;
    select.replaceChildren(...regions.map((r) => el("option", { value: r }, r)));
    select.value = regions.includes(keep) ? keep : regions[regions.length - 1];
  }
}

function showPresenterState(st) {
  presenterState = st;
  const specs = st.scenarios || [];
  const key = specs.map((s) => s.name + " " + s.args).join(",");
  if (key !== specsKey) {
    specsKey = key;
    $("presenter-scenarios").replaceChildren(...specs.map((spec) => {
      const b = el("button", { class: "btn", type: "button", id: "scenario-" + spec.name, title: spec.summary },
        spec.name + (spec.args === "<region>" ? " ‹region›" : ""));
      b.onclick = () => startScenario(spec);
      return b;
    }));
  }
  const running = st.running;
  for (const b of $("presenter-scenarios").children) b.disabled = !!running;
  let phase = "pick a scenario";
  if (running) {
    const mine = (st.events || []).filter((e) => e.run === running.run);
    const last = mine[mine.length - 1];
    phase = "running " + running.request.name + (running.request.region ? " " + running.request.region : "") +
      " (run " + running.run + ")" + (last ? ": " + last.text : "");
  } else if ((st.results || []).length) {
    const r = st.results[st.results.length - 1];
    phase = "last: " + r.request.name + (r.request.region ? " " + r.request.region : "") + " " + (r.ok ? "OK, nothing lost" : "FAILED");
  }
  setText("presenter-phase", phase);
}

async function startScenario(spec) {
  let path = "/api/scenario/" + encodeURIComponent(spec.name);
  if (spec.args === "<region>") path += "?region=" + encodeURIComponent($("presenter-region").value);
  for (const b of $("presenter-scenarios").children) b.disabled = true;
  const [status, body] = await presenterFetch("POST", path, presenterToken);
  if (status !== 202) {
    actionRefusal = spec.name + ": " + refused(status, body);
    presenterError("");
    if (status === 401) { forgetToken(false); return; }
  } else {
    actionRefusal = "";
    presenterError("");
    sessionStorage.removeItem(DISMISSED_KEY);
    setText("presenter-phase", "starting " + spec.name + " (run " + body.run + ")");
  }
  pollPresenter();
}

$("presenter-login").onsubmit = (ev) => {
  ev.preventDefault();
  const token = $("presenter-token").value.trim();
  if (!token) { presenterError("type the token the demo was started with (--presenter-token)"); return; }
  useToken(token);
};
$("presenter-forget").onclick = () => forgetToken(true);
// One click removes every phone (POST /api/join/remove): their
// credentials end, the broker disconnects them, the join links shown so
// far stop working.
$("presenter-remove-phones").onclick = async () => {
  const [status, body] = await presenterFetch("POST", "/api/join/remove", presenterToken);
  if (status !== 200) {
    actionRefusal = "remove all phones: " + refused(status, body);
    presenterError("");
    if (status === 401) forgetToken(false);
    return;
  }
  actionRefusal = "";
  presenterError("");
  setText("presenter-phase", "removed " + body.phones + " phones (" + body.disconnected + " disconnected); the join view shows a new link");
  $("presenter-join-qr").dataset.at = 0; // the old link is withdrawn: show the new one now
  renderPresenter(lastSnap);
};
$("presenter-hide").onclick = () => { sessionStorage.setItem(HIDDEN_KEY, "1"); renderPresenter(lastSnap); };
$("presenter-toggle").onclick = () => { sessionStorage.removeItem(HIDDEN_KEY); renderPresenter(lastSnap); };
takeTokenFromAddress();

// History: one metric at a time, chosen with the tabs (or ?metric=), one
// line per region, averaged over device types, with its min–max band.
let historyMetric = new URLSearchParams(location.search).get("metric") || "";
let historyTimer = null;
let historyData = null;
let tabsKey = "";

function renderTabs(snap) {
  const names = [...new Set(snap.regions.flatMap((r) => (r.metrics || []).map((m) => m.name)))].sort();
  if (!historyMetric && names.length) {
    historyMetric = names.includes("temperature_c") ? "temperature_c" : names[0];
    loadHistory();
  }
  if (historyMetric && !names.includes(historyMetric)) names.push(historyMetric);
  const key = names.join(",") + "|" + historyMetric;
  if (key === tabsKey) return;
  tabsKey = key;
  $("history-tabs").replaceChildren(...names.map((n) => {
    const b = el("button", { class: n === historyMetric ? "tab on" : "tab", id: "tab-" + n, type: "button" }, n);
    b.onclick = () => { historyMetric = n; tabsKey = ""; renderTabs(lastSnap); historyData = null; drawHistory(); loadHistory(); };
    return b;
  }));
}

function showHistoryState(text, cls) {
  const e = $("history-state");
  e.hidden = !text;
  setText(e, text || "", "chart-state " + (cls || ""));
}

async function loadHistory() {
  clearTimeout(historyTimer);
  historyTimer = setTimeout(loadHistory, HISTORY_EVERY_MS);
  const metric = historyMetric;
  if (!metric) return;
  let body, ok = false;
  try {
    const resp = await fetch("/api/history?metric=" + encodeURIComponent(metric) + "&minutes=" + HISTORY_MINUTES, { cache: "no-store" });
    ok = resp.ok;
    body = await resp.json();
  } catch (e) {
    body = { state: "offline", error: "history unavailable: dashboard server unreachable" };
  }
  if (metric !== historyMetric) return; // the viewer picked another one meanwhile
  if (!ok) {
    historyData = null;
    drawHistory();
    showHistoryState(body.error || "history unavailable", body.state === "off" ? "warn-text" : "bad-text");
    return;
  }
  historyData = body;
  drawHistory();
}

// mergeByRegion folds the device types of each region into one series per
// region: count-weighted avg, min of mins, max of maxes.
function mergeByRegion(h) {
  const out = new Map();
  for (const s of h.series || []) {
    let m = out.get(s.region);
    if (!m) { m = new Map(); out.set(s.region, m); }
    for (const p of s.points || []) {
      const t = new Date(p.minute).getTime();
      const q = m.get(t) || { n: 0, sum: 0, min: Infinity, max: -Infinity };
      q.n += p.count; q.sum += p.avg * p.count;
      q.min = Math.min(q.min, p.min); q.max = Math.max(q.max, p.max);
      m.set(t, q);
    }
  }
  return out;
}

function drawHistory() {
  const canvas = $("history-chart");
  const c = sizeCanvas(canvas);
  const legend = $("history-legend");
  if (!historyData) { legend.replaceChildren(); setMarkers(canvas, []); return; }
  const regions = lastSnap ? lastSnap.regions.map((r) => r.region) : [];
  const merged = mergeByRegion(historyData);
  for (const r of merged.keys()) if (!regions.includes(r)) regions.push(r);
  legend.replaceChildren(...regions.filter((r) => merged.has(r)).map((r) =>
    el("span", {}, el("span", { class: "sw", style: "background:" + colorOf(regions.indexOf(r)) }), r)));
  const end = Math.floor((lastSnap ? new Date(lastSnap.time) : new Date()).getTime() / 60000) * 60000;
  const start = end - (HISTORY_MINUTES - 1) * 60000;
  let lo = Infinity, hi = -Infinity;
  for (const m of merged.values()) {
    for (const [t, q] of m) if (q.n && t >= start && t <= end) { lo = Math.min(lo, q.min); hi = Math.max(hi, q.max); }
  }
  if (!isFinite(lo)) {
    showHistoryState("no history of " + historyData.metric + " in the last " + HISTORY_MINUTES + " min yet", "muted");
    setMarkers(canvas, []);
    return;
  }
  showHistoryState("");
  if (!c) return;
  const { ctx, w, h } = c;
  if (hi === lo) { hi += 1; lo -= 1; }
  const pad = (hi - lo) * 0.08; hi += pad; lo -= pad;
  const L = 64, R = 10, T = 8, B = 28;
  const x = (t) => L + (t - start) / (end - start) * (w - L - R);
  const y = (v) => T + (hi - v) / (hi - lo) * (h - T - B);
  // The last minute is drawn at the right edge, so are scenarios in it.
  const now = lastSnap ? new Date(lastSnap.time).getTime() : Date.now();
  const clampX = (t) => x(Math.min(t, end));
  setMarkers(canvas, drawMarkers(ctx, (lastSnap && lastSnap.scenarios) || [], start, end + 60000, clampX, T, h - B, now, 16));
  ctx.font = "16px system-ui, sans-serif";
  ctx.fillStyle = "#b4c0d0";
  ctx.strokeStyle = "#2e3a4a";
  ctx.lineWidth = 1;
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4, yy = y(v);
    ctx.beginPath(); ctx.moveTo(L, yy); ctx.lineTo(w - R, yy); ctx.stroke();
    ctx.fillText(fmtNum(v), L - 8, yy);
  }
  ctx.textBaseline = "top";
  for (let t = end; t >= start; t -= 5 * 60000) {
    ctx.textAlign = t === end ? "right" : "center";
    ctx.fillText(new Date(t).toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", hour12: false }), x(t), h - B + 6);
  }
  for (const [r, m] of merged) {
    const color = colorOf(regions.indexOf(r));
    const pts = [...m.entries()].filter(([t, q]) => q.n && t >= start && t <= end).sort((a, b) => a[0] - b[0]);
    if (!pts.length) continue;
    ctx.globalAlpha = 0.15; ctx.fillStyle = color;
    ctx.beginPath();
    pts.forEach(([t, q], i) => (i ? ctx.lineTo(x(t), y(q.max)) : ctx.moveTo(x(t), y(q.max))));
    for (let i = pts.length - 1; i >= 0; i--) ctx.lineTo(x(pts[i][0]), y(pts[i][1].min));
    ctx.closePath(); ctx.fill();
    ctx.globalAlpha = 1; ctx.strokeStyle = color; ctx.lineWidth = 3;
    ctx.beginPath();
    pts.forEach(([t, q], i) => (i ? ctx.lineTo(x(t), y(q.sum / q.n)) : ctx.moveTo(x(t), y(q.sum / q.n))));
    ctx.stroke();
    if (pts.length === 1) { ctx.fillStyle = color; ctx.beginPath(); ctx.arc(x(pts[0][0]), y(pts[0][1].sum / pts[0][1].n), 4, 0, 7); ctx.fill(); }
  }
}
window.addEventListener("resize", drawHistory);

function setConnected(ok) {
  if (ok === connected && (ok || disconnectedSince)) return;
  connected = ok;
  disconnectedSince = ok ? null : (disconnectedSince || new Date());
  setText("conn-state", ok ? "live" : "disconnected", ok ? "badge good" : "badge bad");
  document.body.classList.toggle("stale", !ok);
  renderAlerts(lastSnap);
}

// loadRecent fetches the last minutes of each region's rate from the
// server and puts them before what the page has seen itself, so that a
// reload or a new tab draws the story so far (a scenario's drop and
// recovery), not an empty sparkline.
async function loadRecent() {
  let body;
  try {
    const resp = await fetch("/api/recent", { cache: "no-store" });
    if (!resp.ok) return;
    body = await resp.json();
  } catch (e) { return; }
  for (const [region, points] of Object.entries(body.regions || {})) {
    const h = spark.get(region) || [];
    const first = h.length ? h[0][0] : Infinity;
    spark.set(region, points.filter((p) => p[0] < first).concat(h));
  }
  if (lastSnap) for (const r of lastSnap.regions) {
    const canvas = $("spark-" + r.region);
    if (canvas) drawSpark(canvas, spark.get(r.region) || [], new Date(lastSnap.time).getTime(), lastSnap.scenarios || []);
  }
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
  ws.onopen = () => { arm(); loadRecent(); };
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
