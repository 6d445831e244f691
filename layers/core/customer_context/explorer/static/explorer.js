// The profile explorer: one customer as the agent sees them, through the fetch and replay APIs of the
// server that served this page. No third-party code; every value is written as text (never as HTML).
"use strict";

const KEY = "customer-context-explorer-key";
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
let current = null; // {type, value, pid, descriptions}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function show(value) {
  if (value === null || value === undefined) return "—";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

function short(text, n) {
  text = String(text);
  return text.length > n ? text.slice(0, n - 1) + "…" : text;
}

function table(node, head, rows) {
  node.replaceChildren();
  if (!rows.length) { node.append(el("tr", {}, el("td", { class: "muted" }, "nothing to show"))); return; }
  node.append(el("tr", {}, ...head.map((h) => el("th", {}, h))));
  for (const row of rows) node.append(row instanceof Node ? row : el("tr", {}, ...row.map((c) => c instanceof Node ? el("td", {}, c) : el("td", {}, show(c)))));
}

function status(text, bad) {
  $("status").textContent = text;
  $("status").className = bad ? "error" : "muted";
}

// -- the API ----------------------------------------------------------------------------------------------
async function api(path) {
  const key = sessionStorage.getItem(KEY);
  if (!key) throw new Error("enter a consumer key first");
  const response = await fetch(path, { headers: { authorization: "Bearer " + key }, cache: "no-store" });
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const error = new Error((body && body.message) || String(body) || response.statusText);
    error.status = response.status;
    throw error;
  }
  return { body, headers: response.headers };
}

function base(type, value) {
  return "/v1/context/" + encodeURIComponent(type) + "/" + encodeURIComponent(value);
}

// -- sections ---------------------------------------------------------------------------------------------
function renderFreshness(body) {
  const f = body.freshness || {};
  $("profile-id").textContent = body.profile_id || "(no profile yet)";
  $("freshness").textContent = "built " + show(f.built_at) + " · data as of " + show(f.data_as_of) +
    (f.stale ? " · STALE" : "") + " · served " + show(f.served_at);
}

function renderConsent(profile) {
  const node = $("consent");
  node.replaceChildren();
  const consent = (profile || {}).consent;
  if (!consent) { node.append(el("span", { class: "muted" }, "consent: not in scope, or no categories declared")); return; }
  node.append("Consent: ");
  for (const [name, granted] of Object.entries(consent)) {
    node.append(el("span", { class: "tag " + (granted ? "granted" : "denied"), "data-consent": name },
      name + ": " + (granted ? "granted" : "denied")), " ");
  }
}

function renderFields(id, section, data) {
  const rows = Object.entries(data || {}).map(([name, value]) => el("tr", { "data-field": section + "." + name },
    el("td", {}, name), el("td", {}, show(value)),
    el("td", { class: "desc" }, (current.descriptions || {})[section + "." + name] || "")));
  table($(id), ["field", "value", "description"], rows);
}

function renderRecords(records) {
  const node = $("records");
  node.replaceChildren();
  const entries = Object.entries(records || {});
  if (!entries.length) { node.append(el("p", { class: "muted" }, "no records (or not in scope)")); return; }
  for (const [name, row] of entries) {
    const t = el("table", { "data-record": name });
    node.append(el("h3", {}, name));
    node.append(t);
    table(t, ["column", "value"], Object.entries(row || {}).map(([k, v]) => [k, v]));
  }
}

function renderInteractions(items) {
  table($("interactions"), ["table", "when", "what"], (items || []).map((item) => [item.table,
    item.updated_at || item.created_at, short(Object.entries(item).filter(([k]) => !["table"].includes(k))
      .map(([k, v]) => k + ": " + show(v)).join(" · "), 240)]));
}

function renderTimeline(events) {
  const rows = (events || []).map((e) => el("tr", { "data-source": e.source || "snapshot" },
    el("td", {}, e.timestamp || e.received_at || ""), el("td", {}, el("span", { class: "tag " + (e.source || "snapshot") }, e.source || "snapshot")),
    el("td", {}, e.type || ""), el("td", {}, e.event || e.name || e.page_path || ""),
    el("td", {}, short(e.properties || "", 160))));
  table($("timeline"), ["when", "from", "type", "event", "properties"], rows);
  plotPerDay($("events-plot"), (events || []).map((e) => String(e.timestamp || e.received_at || "").slice(0, 10)).filter(Boolean));
}

// -- plots --------------------------------------------------------------------------------------------------
function plotPerDay(node, days) {
  node.replaceChildren();
  if (!days.length) return;
  const counts = {};
  for (const d of days) counts[d] = (counts[d] || 0) + 1;
  const keys = Object.keys(counts).sort();
  const w = 560, h = 120, pad = 24, bw = Math.max(4, Math.min(40, (w - 2 * pad) / keys.length - 4));
  const max = Math.max(...Object.values(counts));
  const plot = svg("svg", { viewBox: `0 0 ${w} ${h}`, width: w, height: h, role: "img", "aria-label": "events per day" });
  keys.forEach((k, i) => {
    const bh = ((h - 2 * pad) * counts[k]) / max, x = pad + i * (bw + 4);
    const bar = svg("rect", { x, y: h - pad - bh, width: bw, height: bh, fill: "#2f5fd0", "data-day": k });
    bar.append(svg("title", {}, `${k}: ${counts[k]} events`));
    plot.append(bar);
    if (keys.length <= 12 || i % Math.ceil(keys.length / 12) === 0) plot.append(svg("text", { x, y: h - 8 }, k.slice(5)));
  });
  plot.append(svg("text", { x: pad, y: 14 }, `events per day (recent events; max ${max})`));
  node.append(plot);
}

function plotHistory(node, versions) {
  node.replaceChildren();
  const ordered = [...versions].reverse();
  const paths = [...new Set(ordered.flatMap((v) => Object.keys(v.values || {})))]
    .filter((p) => new Set(ordered.map((v) => (v.values || {})[p])).size > 1).slice(0, 12);
  if (!paths.length || ordered.length < 2) {
    node.append(el("p", { class: "muted" }, "no trait or score changed over the history yet"));
    return;
  }
  for (const path of paths) {
    const w = 240, h = 64, pad = 8;
    const values = ordered.map((v) => (v.values || {})[path]);
    const known = values.filter((v) => typeof v === "number");
    const lo = Math.min(...known), hi = Math.max(...known), span = hi - lo || 1;
    const x = (i) => pad + (i * (w - 2 * pad)) / Math.max(1, ordered.length - 1);
    const y = (v) => h - pad - ((v - lo) * (h - 2 * pad - 12)) / span;
    const points = values.map((v, i) => (typeof v === "number" ? `${x(i)},${y(v)}` : null)).filter(Boolean).join(" ");
    const plot = svg("svg", { viewBox: `0 0 ${w} ${h}`, width: w, height: h, "data-series": path });
    plot.append(svg("text", { x: pad, y: 11 }, `${path}: ${show(lo)} → ${show(hi)}`));
    plot.append(svg("polyline", { points, fill: "none", stroke: "#2f5fd0", "stroke-width": 2 }));
    values.forEach((v, i) => {
      if (typeof v !== "number") return;
      const dot = svg("circle", { cx: x(i), cy: y(v), r: 3, fill: "#2f5fd0" });
      dot.append(svg("title", {}, `version ${ordered[i].version}: ${v}`));
      plot.append(dot);
    });
    node.append(plot);
  }
}

// -- identity graph -----------------------------------------------------------------------------------------
function drawGraph(graph) {
  const node = $("graph");
  node.replaceChildren();
  const nodes = graph.nodes || [];
  const w = 720, h = 460, cx = w / 2, cy = h / 2 - 10;
  const r = nodes.length > 1 ? Math.min(150, 40 + nodes.length * 18) : 0;
  const pos = {};
  nodes.forEach((n, i) => {
    const a = (2 * Math.PI * i) / Math.max(1, nodes.length) - Math.PI / 2;
    pos[n.type + ":" + n.value] = [cx + r * Math.cos(a), cy + r * Math.sin(a), a];
  });
  const plot = svg("svg", { viewBox: `0 0 ${w} ${h}`, width: w, height: h, role: "img", "aria-label": "identity graph" });
  for (const e of graph.edges || []) {
    const a = pos[e.a.join(":")], b = pos[e.b.join(":")];
    if (!a || !b) continue;
    const g = svg("g", { class: "edge", "data-source": e.source, "data-a": e.a.join(":"), "data-b": e.b.join(":") });
    g.append(svg("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1], stroke: "#8a94a6", "stroke-width": 1.5 }));
    g.append(svg("text", { x: (a[0] + b[0]) / 2, y: (a[1] + b[1]) / 2 - 3, "text-anchor": "middle", fill: "#4b5563" }, e.source));
    g.append(svg("title", {}, `${e.a.join(":")} ↔ ${e.b.join(":")} by ${e.source} at ${e.at}`));
    plot.append(g);
  }
  (graph.refused || []).forEach((e, i) => {
    const a = pos[e.a.join(":")];
    if (!a) return;
    const angle = a[2] + (i % 2 ? 0.35 : -0.35) * (1 + Math.floor(i / 2));
    const far = [cx + (r + 95) * Math.cos(angle), cy + (r + 95) * Math.sin(angle)];
    const label = e.b[0] + ":" + (e.b[1] === null ? "(another customer)" : short(e.b[1], 22));
    const g = svg("g", { class: "refused", "data-a": e.a.join(":"), "data-b": label, "data-reason": e.reason });
    g.append(svg("line", { x1: a[0], y1: a[1], x2: far[0], y2: far[1], stroke: "#c0392b", "stroke-width": 1.5, "stroke-dasharray": "5 4" }));
    g.append(svg("circle", { cx: far[0], cy: far[1], r: 7, fill: "#fff", stroke: "#c0392b" }));
    g.append(svg("text", { x: far[0], y: far[1] + 18, "text-anchor": "middle", fill: "#c0392b" }, label));
    g.append(svg("text", { x: (a[0] + far[0]) / 2, y: (a[1] + far[1]) / 2 - 3, "text-anchor": "middle", fill: "#c0392b" },
      "refused: " + short(e.reason, 40)));
    g.append(svg("title", {}, `refused ${e.source}: ${e.reason}`));
    plot.append(g);
  });
  for (const n of nodes) {
    const id = n.type + ":" + n.value;
    const [x, y] = pos[id];
    const g = svg("g", { class: "node", "data-id": id });
    g.append(svg("circle", { cx: x, cy: y, r: 9, fill: n.joined.how === "first" ? "#2f5fd0" : "#7fa0e8", stroke: "#1d2330" }));
    g.append(svg("text", { x, y: y + 22, "text-anchor": "middle" }, n.type + ":" + short(n.value, 26)));
    g.append(svg("title", {}, `${id} — ${n.joined_via}`));
    plot.append(g);
  }
  node.append(plot);
  table($("refused"), ["refused edge", "source", "first seen", "reason"], (graph.refused || []).map((e) => [
    e.a.join(":") + " ↔ " + e.b[0] + ":" + (e.b[1] === null ? "(another customer)" : e.b[1]), e.source, e.first_seen, e.reason]));
}

// -- history, diff, audit, prompt --------------------------------------------------------------------------
function flatten(context) {
  const out = {};
  for (const [section, data] of Object.entries(context || {})) {
    if (data && typeof data === "object" && !Array.isArray(data)) {
      for (const [k, v] of Object.entries(data)) out[section + "." + k] = JSON.stringify(v);
    } else out[section] = JSON.stringify(data);
  }
  return out;
}

function renderHistory(found) {
  const versions = found.versions || [];
  table($("history"), ["version", "built at", "data as of", "changed"], versions.map((v) => el("tr", { "data-version": v.version },
    el("td", {}, v.version), el("td", {}, v.built_at), el("td", {}, show(v.data_as_of)),
    el("td", {}, short(v.changed.join(", "), 300)))));
  for (const id of ["diff-a", "diff-b"]) {
    $(id).replaceChildren(...versions.map((v) => el("option", { value: v.version }, "v" + v.version + " · " + v.built_at)));
  }
  if (versions.length > 1) { $("diff-a").value = String(versions[1].version); $("diff-b").value = String(versions[0].version); }
  plotHistory($("history-plot"), versions);
}

async function diff(a, b) {
  const [left, right] = await Promise.all([a, b].map((v) => api(base("profile_id", current.pid) + "/replay?version=" + v)));
  const x = flatten(left.body.context), y = flatten(right.body.context);
  const rows = [...new Set([...Object.keys(x), ...Object.keys(y)])].sort().filter((p) => x[p] !== y[p])
    .map((p) => el("tr", { class: "changed", "data-path": p }, el("td", {}, p), el("td", {}, short(x[p] ?? "—", 200)),
      el("td", {}, short(y[p] ?? "—", 200))));
  table($("diff"), ["field", "v" + a, "v" + b], rows);
}

function renderAudit(found) {
  table($("audit"), ["at", "consumer", "via", "version served", "built at", "status", "returned"],
    (found.records || []).map((r) => el("tr", { "data-via": r.via, "data-version": show(r.snapshot_version) },
      el("td", {}, r.at), el("td", {}, r.consumer), el("td", {}, r.via), el("td", {}, show(r.snapshot_version)),
      el("td", {}, r.served ? r.served.built_at : "—"), el("td", {}, r.status),
      el("td", {}, short([...r.sections, ...r.fields].join(", "), 200)))));
}

async function renderPrompt() {
  if (!current) return;
  const budget = Number($("budget").value) || 400;
  try {
    const got = await api(base("profile_id", current.pid) + "/replay?format=text&max_tokens=" + budget);
    $("prompt").textContent = got.body;
    const omitted = JSON.parse(got.headers.get("x-context-omitted-detail") || "[]");
    $("omitted").textContent = `${got.headers.get("x-context-tokens")} tokens (as of the latest build, version ` +
      `${got.headers.get("x-context-version")}); left out: ${omitted.length ? omitted.join("; ") : "nothing"}`;
  } catch (error) {
    $("prompt").textContent = "";
    $("omitted").textContent = "prompt text: " + error.message;
  }
}

async function part(what, run) {
  try { await run(); } catch (error) {
    const target = { history: "history", identity: "refused", audit: "audit" }[what];
    table($(target), [what], [[error.message]]);
    if (what === "identity") $("graph").replaceChildren();
  }
}

// -- search ---------------------------------------------------------------------------------------------------
async function load(type, value) {
  status("looking up " + type + " " + value + " …");
  let got;
  try {
    got = await api(base(type, value));
  } catch (error) {
    $("profile").hidden = true;
    status(error.message, true);
    return;
  }
  const body = got.body;
  current = { type, value, pid: body.profile_id, descriptions: {} };
  renderFreshness(body);
  $("profile").hidden = false;
  status("found " + type + " " + value);
  const context = body.context || {};
  if (body.profile_id) {
    await part("history", async () => {
      const found = (await api(base("profile_id", body.profile_id) + "/history")).body;
      current.descriptions = found.descriptions || {};
      renderHistory(found);
    });
  }
  renderConsent(context.profile);
  renderFields("traits", "traits", context.traits);
  renderFields("scores", "scores", context.scores);
  renderRecords(context.records);
  renderInteractions(context.interactions);
  renderTimeline(context.recent_events);
  if (!body.profile_id) return;
  await Promise.all([
    part("identity", async () => drawGraph((await api(base("profile_id", body.profile_id) + "/identity")).body)),
    part("audit", async () => renderAudit((await api(base("profile_id", body.profile_id) + "/audit")).body)),
    renderPrompt(),
  ]);
  status("showing " + body.profile_id + " (found by " + type + " " + value + ")");
}

function keyState() {
  const key = sessionStorage.getItem(KEY);
  $("key-state").textContent = key ? "key set for this tab (" + key.slice(0, 6) + "…)" : "no key (kept for this tab only)";
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("key").value.trim();
  if (key) sessionStorage.setItem(KEY, key);
  $("key").value = "";
  keyState();
});
$("forget").addEventListener("click", () => { sessionStorage.removeItem(KEY); keyState(); });
$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  const type = $("id-type").value.trim(), value = $("id-value").value.trim();
  if (!type || !value) { status("give an identifier type and value", true); return; }
  history.replaceState(null, "", "#" + encodeURIComponent(type) + ":" + encodeURIComponent(value));
  load(type, value);
});
$("prompt-form").addEventListener("submit", (event) => { event.preventDefault(); renderPrompt(); });
$("diff-form").addEventListener("submit", (event) => {
  event.preventDefault();
  diff($("diff-a").value, $("diff-b").value).catch((error) => table($("diff"), ["diff"], [[error.message]]));
});

keyState();
if (location.hash.length > 1) {
  const [type, ...rest] = location.hash.slice(1).split(":");
  try {
    $("id-type").value = decodeURIComponent(type);
    $("id-value").value = decodeURIComponent(rest.join(":"));
    if (sessionStorage.getItem(KEY)) load($("id-type").value, $("id-value").value);
  } catch (error) { // a link cut short or hand-edited: say so instead of stopping the page
    status("the link's identifier is not valid (" + error.message + "): type it in above", true);
  }
}
