// meshlb dashboard: reads the node's view of the mesh from /ui/api/state,
// then follows /ui/api/stream (server-sent events, one document a second).
// No framework and no build step: the DOM is rebuilt from each document.
"use strict";

const palette = ["#0969da", "#1a7f37", "#bf8700", "#8250df", "#cf222e", "#1b7c83", "#bc4c00", "#6e7781",
  "#0550ae", "#116329", "#953800", "#6639ba", "#a40e26", "#3192aa", "#7d4e00", "#424a53"];
const colorOf = {};
let nextColor = 0;
function color(id) {
  if (!(id in colorOf)) colorOf[id] = palette[nextColor++ % palette.length];
  return colorOf[id];
}

const $ = (sel) => document.querySelector(sel);
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
}
function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}
function badge(text, cls) { return el("span", { class: "badge st-" + (cls || text) }, text); }
function fmtRate(v) { return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2); }
function pad(n, w) { return String(n).padStart(w, "0"); }
function fmtTime(iso) {
  const d = new Date(iso);
  return pad(d.getHours(), 2) + ":" + pad(d.getMinutes(), 2) + ":" + pad(d.getSeconds(), 2) + "." + pad(d.getMilliseconds(), 3);
}

let writable = true;
let lastState = null;

function render(s) {
  lastState = s;
  const st = s.status;
  document.title = "meshlb " + s.node;
  $("#node").textContent = s.node;
  setBadge("#ring-agree", st.ring_agreed, "ring agreed", "ring DISAGREES");
  setBadge("#config-agree", st.config_agreed, "config agreed", "config DISAGREES");
  setBadge("#ready", st.ready, "ready", "not ready: " + (st.reason || ""));
  $("#updated").textContent = "updated " + fmtTime(s.now);
  document.body.dataset.ringFingerprint = s.ring.fingerprint;
  renderMembers(s);
  renderBackends(s);
  renderRing(s);
  renderRates(s);
  renderEvents(s);
}

function setBadge(sel, ok, yes, no) {
  const b = $(sel);
  b.textContent = ok ? yes : no;
  b.className = "badge " + (ok ? "ok" : "bad");
}

function renderMembers(s) {
  const load = {};
  for (const n of s.mesh.nodes) load[n.name] = n;
  const fp = s.ring.fingerprint, cfp = s.status.config_fingerprint;
  const body = $("#members tbody");
  body.replaceChildren();
  for (const m of s.status.members) {
    const l = load[m.name] || {};
    const ringOK = m.ring_fingerprint === fp, cfgOK = m.config_fingerprint === cfp;
    body.append(el("tr", { "data-member": m.name, "data-state": m.state },
      el("td", {}, el("b", {}, m.name), m.name === s.node ? " (this node)" : ""),
      el("td", {}, badge(m.state)),
      el("td", { title: m.ring_fingerprint }, badge(ringOK ? "same" : "differs", ringOK ? "up" : "down"), " ", m.ring_fingerprint.slice(0, 8)),
      el("td", {}, badge(cfgOK ? "same" : "differs", cfgOK ? "up" : "down")),
      el("td", { class: "num" }, l.has_summary ? l.sessions : "–"),
      el("td", { class: "num" }, l.has_summary ? fmtRate(l.handshakes_per_s) : "–"),
      el("td", { class: "num" }, l.has_summary ? fmtRate(l.errors_per_s) : "–"),
      el("td", { class: "hide-narrow" }, m.proxy_addr),
      el("td", { class: "hide-narrow" }, m.admin_addr)));
  }
  $("#members-count").textContent = s.status.members.length + " in view";
}

// With --admin-token-file the data and the buttons need a bearer token:
// the page asks for one when a call is refused, keeps it for this tab
// (sessionStorage, never a cookie or the URL) and sends it with every call.
function headers(extra) {
  const h = Object.assign({}, extra || {});
  const t = sessionStorage.getItem("meshlb-token");
  if (t) h["Authorization"] = "Bearer " + t;
  return h;
}

function askToken(why) {
  const t = window.prompt(why + ": paste an admin token (read to watch, write to act)", "");
  if (t) sessionStorage.setItem("meshlb-token", t.trim());
  return !!t;
}

async function act(method, path, what) {
  const out = $("#action-result");
  out.textContent = what + "…";
  try {
    let r = await fetch(path, { method, headers: headers({ "Content-Type": "application/json" }) });
    if ((r.status === 401 || r.status === 403) && askToken(what + " was refused (" + r.status + ")")) {
      r = await fetch(path, { method, headers: headers({ "Content-Type": "application/json" }) });
    }
    const body = await r.json().catch(() => ({}));
    if (r.status === 401 || r.status === 403) writable = false;
    out.textContent = what + ": " + (r.ok ? "done" : r.status + " " + (body.error || r.statusText));
  } catch (e) {
    out.textContent = what + ": " + e;
  }
}

function renderBackends(s) {
  const nodes = s.mesh.nodes.map((n) => n.name);
  const head = $("#backends-head");
  head.replaceChildren(el("th", {}, "backend"), el("th", {}, "admin"), el("th", {}, "effective"),
    el("th", {}, "verdict"), el("th", {}, "votes (node: view)"), el("th", {}, "in ring"), el("th", { class: "num" }, "share"),
    ...nodes.map((n) => el("th", { class: "num" }, n)), el("th", { class: "num" }, "sessions"), el("th", {}, ""));
  const body = $("#backends tbody");
  body.replaceChildren();
  for (const b of s.backends) {
    const per = s.mesh.nodes.map((n) => n.backends[b.id] || 0);
    const total = per.reduce((a, v) => a + v, 0);
    const votes = el("td", { class: "votes" });
    for (const o of b.observations || []) {
      if (!o.live) continue;
      votes.append(el("span", { title: o.detail || "" }, o.node + ": ", badge(o.state)));
    }
    const share = s.ring.shares[b.id];
    const actions = el("td", {});
    if (b.state === "active") actions.append(el("button", { onclick: () => act("POST", "/v1/backends/" + encodeURIComponent(b.id) + "/drain", "drain " + b.id) }, "drain"));
    if (b.state === "draining") actions.append(el("button", { onclick: () => act("POST", "/v1/backends/" + encodeURIComponent(b.id) + "/undrain", "undrain " + b.id) }, "undrain"));
    if (b.state !== "removed") actions.append(el("button", { class: "danger", onclick: () => { if (confirm("Remove backend " + b.id + " from the mesh?")) act("DELETE", "/v1/backends/" + encodeURIComponent(b.id), "remove " + b.id); } }, "remove"));
    for (const btn of actions.querySelectorAll("button")) btn.disabled = !writable;
    const sw = el("i", {});
    sw.style.background = color(b.id);
    body.append(el("tr", { "data-backend": b.id, "data-state": b.effective_state, "data-in-ring": String(b.in_ring) },
      el("td", { title: b.addr }, el("b", {}, b.id), el("div", { class: "muted" }, b.addr + (b.pool && b.pool !== "default" ? " · pool " + b.pool : ""))),
      el("td", {}, badge(b.state)),
      el("td", { title: b.reason || "" }, badge(b.effective_state)),
      el("td", {}, b.health ? badge(b.health.state) : "–", b.health ? " " + b.health.down_votes + "/" + b.health.voters + " down" : ""),
      votes,
      el("td", {}, b.in_ring ? "yes" : "no"),
      el("td", { class: "num" }, share ? (share * 100).toFixed(1) + "%" : "–"),
      ...per.map((v, i) => el("td", { class: "num", "data-node": nodes[i] }, v)),
      el("td", { class: "num total-sessions" }, total),
      actions));
  }
  $("#backends-count").textContent = s.backends.length + " in the catalog, " + s.mesh.sessions + " sessions mesh-wide";
}

function renderRing(s) {
  const r = $("#ring");
  const owners = s.ring.owners, members = s.ring.members, n = owners.length;
  // Redrawn only when the ring changed: its fingerprint says so.
  if (r.dataset.fingerprint === s.ring.fingerprint && r.childNodes.length) return;
  r.replaceChildren();
  r.dataset.fingerprint = s.ring.fingerprint;
  r.dataset.members = members.join(",");
  $("#ring-fp").textContent = s.ring.fingerprint ? s.ring.fingerprint + ", " + s.ring.partitions + " partitions" : "no ring";
  if (n === 0) {
    r.append(svg("circle", { r: 80, fill: "none", stroke: "#cf222e", "stroke-width": 20, "stroke-dasharray": "4 4" }));
  }
  const R = 100, r0 = 62;
  const pt = (rad, a) => (rad * Math.cos(a)).toFixed(2) + " " + (rad * Math.sin(a)).toFixed(2);
  // Runs of sectors with one owner are one arc.
  for (let p = 0; p < n;) {
    let q = p + 1;
    while (q < n && owners[q] === owners[p]) q++;
    const a0 = (p / n) * 2 * Math.PI - Math.PI / 2, a1 = (q / n) * 2 * Math.PI - Math.PI / 2;
    const large = q - p > n / 2 ? 1 : 0;
    const id = members[owners[p]];
    const d = q - p === n
      ? "M 0 " + -R + " A " + R + " " + R + " 0 1 1 0 " + R + " A " + R + " " + R + " 0 1 1 0 " + -R +
        " M 0 " + -r0 + " A " + r0 + " " + r0 + " 0 1 0 0 " + r0 + " A " + r0 + " " + r0 + " 0 1 0 0 " + -r0 + " Z"
      : "M" + pt(r0, a0) + " L" + pt(R, a0) + " A" + R + " " + R + " 0 " + large + " 1 " + pt(R, a1) +
        " L" + pt(r0, a1) + " A" + r0 + " " + r0 + " 0 " + large + " 0 " + pt(r0, a0) + " Z";
    const path = svg("path", { d, fill: color(id), "fill-rule": "evenodd", "data-owner": id });
    const t = svg("title", {});
    t.textContent = id + ": " + Math.round(p * 360 / n) + "°–" + Math.round(q * 360 / n) + "°";
    path.append(t);
    r.append(path);
    p = q;
  }
  const label = svg("text", { x: 0, y: 6, "text-anchor": "middle", "font-size": 16 });
  label.textContent = members.length + " backends";
  r.append(label);
  const legend = $("#ring-legend");
  legend.replaceChildren();
  for (const id of members) {
    const sw = el("i", {});
    sw.style.background = color(id);
    legend.append(el("li", {}, sw, id + " " + ((s.ring.shares[id] || 0) * 100).toFixed(1) + "%"));
  }
}

function spark(sel, values) {
  const g = $(sel);
  g.replaceChildren();
  if (values.length < 2) return;
  const max = Math.max(1e-9, ...values);
  const pts = values.map((v, i) => (i * 300 / (values.length - 1)).toFixed(1) + "," + (58 - (v / max) * 54).toFixed(1));
  g.append(svg("polyline", { points: pts.join(" ") }));
}

function renderRates(s) {
  const rs = s.rates || [];
  spark("#chart-sessions", rs.map((x) => x.sessions));
  spark("#chart-hs", rs.map((x) => x.handshakes_per_s));
  spark("#chart-req", rs.map((x) => x.requests_per_s));
  spark("#chart-err", rs.map((x) => x.errors_per_s));
  $("#rate-sessions").textContent = s.mesh.sessions;
  $("#rate-hs").textContent = fmtRate(s.mesh.handshakes_per_s);
  $("#rate-req").textContent = fmtRate(s.mesh.requests_per_s);
  $("#rate-err").textContent = fmtRate(s.mesh.errors_per_s);
}

function renderEvents(s) {
  const ol = $("#events");
  ol.replaceChildren();
  for (const e of (s.events || []).slice().reverse()) {
    ol.append(el("li", { "data-kind": e.kind }, el("time", { datetime: e.time }, fmtTime(e.time)), el("span", { class: "k" }, e.kind), e.detail));
  }
}

// connect reads the server-sent event stream with fetch rather than
// EventSource, which cannot send an Authorization header.
async function connect() {
  for (;;) {
    try {
      const r = await fetch("api/stream", { headers: headers() });
      if (r.status === 401 || r.status === 403) {
        $("#updated").textContent = "this admin API needs a token";
        if (!askToken("The dashboard needs a read token")) return;
        continue;
      }
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const ev = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const data = ev.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
          if (!data) continue;
          try { render(JSON.parse(data)); } catch (e) { $("#updated").textContent = "bad document: " + e; }
        }
      }
    } catch (e) { /* the node went away: retry below */ }
    $("#updated").textContent = "disconnected; retrying" + (lastState ? " (showing " + fmtTime(lastState.now) + ")" : "");
    await new Promise((res) => setTimeout(res, 2000));
  }
}

fetch("api/state", { headers: headers() }).then((r) => r.json()).then(render).catch(() => {});
connect();
