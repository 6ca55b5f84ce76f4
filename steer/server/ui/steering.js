// The steering playground: the same prompt and seed generated unsteered and steered side by side,
// streamed, each reply scored; a strength slider that regenerates as it moves; a sweep of
// strengths sent at once (so the server batches them) drawing the dose-response curve as replies
// arrive. Every call is the public API: chat completions with "steering", /v1/vectors, /v1/scores.
import { api, apiJSON, showError, clearError, svg, html, axes } from "./app.js";

const $ = (id) => document.getElementById(id);

let started = false;
let run = 0; // the generation shown; replies of older runs are dropped
let ctrl = null; // aborts the running generation when a newer one starts
let sweepRun = 0;
let sweepCtrl = null;
let categories = []; // the server lexicon's emotion categories

export function showSteering() {
  if (started) return;
  started = true;
  loadVectors();
}

async function loadVectors() {
  try {
    const list = await apiJSON("/v1/vectors");
    const sel = $("vector");
    sel.replaceChildren(...list.data.map((v) => html("option", {
      value: v.name, title: `${v.hook} of layers ${v.layers.join(",")}`, "data-layers": v.layers.join(","), "data-locus": (v.positions_from_end || []).join(","),
    },
      `${v.name} (layer${v.layers.length > 1 ? "s" : ""} ${v.layers.join(",")})`)));
    if (list.data.length === 0) {
      showError("The server holds no steering vectors: start tiller serve with --vectors DIR (vectors from tiller derive), or POST /v1/vectors.");
      return;
    }
    syncVector();
    await generate();
  } catch (e) {
    showError(e.message);
  }
}

// syncVector shows the chosen vector's layers, and offers "locus" when it was derived at one.
function syncVector() {
  const opt = $("vector").selectedOptions[0];
  $("layers").placeholder = opt ? "its own: " + opt.dataset.layers : "";
  const locus = $("positions").querySelector('[value="locus"]'), at = opt ? opt.dataset.locus : "";
  locus.disabled = !at;
  locus.textContent = at ? `locus (${at.split(",").map((k) => "−" + k).join(", ")} from the end)` : "locus (the vector was not derived at one)";
  if (locus.disabled && $("positions").value === "locus") $("positions").value = "all";
}

// ---- the request of the controls ----

function chatBody() {
  const messages = [];
  if ($("system").value.trim()) messages.push({ role: "system", content: $("system").value });
  messages.push({ role: "user", content: $("message").value });
  return {
    messages,
    max_tokens: Number($("max-tokens").value),
    temperature: Number($("temperature").value),
    seed: Number($("seed").value),
  };
}

function steering(strength) {
  const s = { vector: $("vector").value, strength, relative: $("relative").checked, positions: $("positions").value };
  if ($("layers").value.trim()) s.layers = $("layers").value.trim();
  return [s];
}

// ---- the slider ----

function syncRange() {
  const r = Math.abs(Number($("range").value)) || 1;
  const el = $("strength");
  el.min = -r;
  el.max = r;
  el.step = r / 20;
  $("sweep-to").value = r;
}

$("range").addEventListener("change", syncRange);
$("relative").addEventListener("change", () => {
  $("range").value = $("relative").checked ? 1 : 10;
  syncRange();
  $("strength").value = $("relative").checked ? 0.4 : 4;
  showStrength();
});
$("vector").addEventListener("change", () => { syncVector(); generate(); });
for (const id of ["positions", "layers"]) $(id).addEventListener("change", () => generate());

function showStrength() {
  $("strength-value").value = Number($("strength").value);
}

let debounce = 0;
$("strength").addEventListener("input", () => {
  showStrength();
  clearTimeout(debounce);
  debounce = setTimeout(generate, 150);
});

$("steer-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  generate();
});

// ---- side by side ----

// streamChat posts a streamed chat completion and calls onText with the reply so far.
async function streamChat(body, signal, onText) {
  const resp = await api("/v1/chat/completions", { method: "POST", body: { ...body, stream: true }, signal });
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "", text = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return text;
    buf += value;
    for (let i; (i = buf.indexOf("\n\n")) >= 0;) {
      const event = buf.slice(0, i);
      buf = buf.slice(i + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return text;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        for (const c of chunk.choices) if (c.delta && c.delta.content) text += c.delta.content;
        onText(text);
      }
    }
  }
}

async function scoreTexts(texts, signal) {
  const out = await apiJSON("/v1/scores", { method: "POST", body: { texts }, signal });
  if (out.data.length) categories = Object.keys(out.data[0].emotion_per100);
  return out.data;
}

// measures are what a reply is scored by: [key, label, value of a steer.Scores].
function measures() {
  return [
    ["vader_compound", "VADER compound", (s) => s.vader_compound],
    ...categories.map((c) => [c, `${c} words /100`, (s) => s.emotion_per100[c]]),
    ["first_person_per100", "1st-person /100", (s) => s.first_person_per100],
    ["words", "words", (s) => s.words],
  ];
}

function showScores(pane, s) {
  const dl = pane.querySelector(".scores");
  dl.replaceChildren();
  for (const [key, label, get] of measures()) {
    const v = get(s);
    dl.append(html("dt", {}, label), html("dd", { "data-measure": key }, key === "words" ? String(v) : v.toFixed(3)));
  }
}

async function generate() {
  if (!$("vector").value) return;
  if (ctrl) ctrl.abort();
  ctrl = new AbortController();
  const id = ++run;
  document.body.dataset.run = id;
  clearError();
  const strength = Number($("strength").value);
  const where = $("positions").value === "all" ? "" : `, ${$("positions").value} positions`;
  $("steered").querySelector(".label").textContent = `(${$("vector").value} at ${strength}${$("relative").checked ? " × norm" : ""}${where})`;
  $("steer-status").textContent = "generating…";
  const t0 = performance.now();
  const body = chatBody();
  await Promise.all([
    reply($("unsteered"), body, id, ctrl.signal),
    reply($("steered"), { ...body, steering: steering(strength) }, id, ctrl.signal),
  ]);
  if (id === run) $("steer-status").textContent = `both replies in ${((performance.now() - t0) / 1000).toFixed(2)} s, seed ${body.seed}`;
}

async function reply(pane, body, id, signal) {
  pane.dataset.state = "running";
  pane.dataset.run = id;
  const text = pane.querySelector(".text");
  text.textContent = "";
  pane.querySelector(".scores").replaceChildren();
  try {
    const full = await streamChat(body, signal, (t) => { if (id === run) text.textContent = t; });
    const [s] = await scoreTexts([full], signal);
    if (id !== run) return;
    text.textContent = full;
    showScores(pane, s);
    pane.dataset.state = "done";
  } catch (e) {
    if (e.name === "AbortError" || id !== run) return;
    pane.dataset.state = "error";
    showError(e.message);
  }
}

// ---- the sweep ----

let points = []; // {strength, scores: [steer.Scores per reply], texts}

$("sweep-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sweep();
});
$("sweep-metric").addEventListener("change", drawSweep);

function strengths() {
  const to = Number($("sweep-to").value), n = Math.max(2, Math.min(16, Math.round(Number($("sweep-points").value))));
  return Array.from({ length: n }, (_, i) => +((to * i) / (n - 1)).toPrecision(6));
}

async function sweep() {
  if (!$("vector").value) return;
  if (sweepCtrl) sweepCtrl.abort();
  sweepCtrl = new AbortController();
  const id = ++sweepRun, signal = sweepCtrl.signal;
  const list = strengths(), n = Math.max(1, Math.min(8, Math.round(Number($("sweep-n").value))));
  points = [];
  $("dose").dataset.state = "running";
  $("dose").dataset.points = list.length;
  $("sweep-status").textContent = `${list.length} strengths × ${n} replies in one batch…`;
  clearError();
  drawSweep();
  const body = { ...chatBody(), n };
  const t0 = performance.now();
  try {
    // Every strength at once: the server's continuous batching runs them as one batch.
    await Promise.all(list.map(async (strength) => {
      const out = await apiJSON("/v1/chat/completions", { method: "POST", body: { ...body, steering: steering(strength) }, signal });
      const texts = out.choices.map((c) => c.message.content);
      const scores = await scoreTexts(texts, signal);
      if (id !== sweepRun) return;
      points.push({ strength, scores, texts });
      drawSweep();
    }));
    if (id !== sweepRun) return;
    $("dose").dataset.state = "done";
    $("sweep-status").textContent = `${list.length} strengths × ${n} replies in ${((performance.now() - t0) / 1000).toFixed(2)} s`;
  } catch (e) {
    if (e.name === "AbortError" || id !== sweepRun) return;
    $("dose").dataset.state = "error";
    showError(e.message);
  }
}

function drawSweep() {
  const ms = measures(), sel = $("sweep-metric");
  if (sel.options.length !== ms.length) {
    const was = sel.value;
    sel.replaceChildren(...ms.map(([k, label]) => html("option", { value: k }, label)));
    if (ms.some(([k]) => k === was)) sel.value = was;
  }
  const [key, label, get] = ms.find(([k]) => k === sel.value) || ms[0];
  const pts = points.slice().sort((a, b) => a.strength - b.strength).map((p) => {
    const vs = p.scores.map(get);
    return { ...p, mean: vs.reduce((a, b) => a + b, 0) / vs.length, lo: Math.min(...vs), hi: Math.max(...vs) };
  });
  const list = strengths();
  const x0 = Math.min(...list), x1 = Math.max(...list) > x0 ? Math.max(...list) : x0 + 1;
  let y0 = 0, y1 = 1;
  if (key === "vader_compound") y0 = -1;
  else y1 = Math.max(1, ...pts.map((p) => p.hi)) * 1.1;
  const left = 60, top = 10, width = 520, height = 240;
  const sx = (x) => left + ((x - x0) / (x1 - x0)) * width, sy = (y) => top + height - ((y - y0) / (y1 - y0)) * height;
  const s = svg("svg", { width: left + width + 20, height: top + height + 44, id: "dose-svg" });
  axes(s, { sx, sy, x0, x1, y0, y1, xlabel: `strength${$("relative").checked ? " (× residual norm)" : ""}`, ylabel: label, left, top, width, height });
  if (pts.length > 1) s.append(svg("polyline", { points: pts.map((p) => `${sx(p.strength)},${sy(p.mean)}`).join(" "), fill: "none", stroke: "#b2182b", "stroke-width": 1.5 }));
  for (const p of pts) {
    s.append(svg("line", { x1: sx(p.strength), y1: sy(p.lo), x2: sx(p.strength), y2: sy(p.hi), stroke: "#f4a582", "stroke-width": 2 }));
    const c = svg("circle", { class: "pt", cx: sx(p.strength), cy: sy(p.mean), r: 5, fill: "#b2182b", "data-strength": p.strength, "data-mean": p.mean });
    c.append(svg("title", {}, `strength ${p.strength}: ${label} ${p.mean.toFixed(3)} (mean of ${p.scores.length}; range ${p.lo.toFixed(3)} to ${p.hi.toFixed(3)})`));
    s.append(c);
  }
  $("dose").replaceChildren(s);
  drawTable(pts);
}

function drawTable(pts) {
  const ms = measures();
  $("sweep-table").querySelector("thead").replaceChildren(html("tr", {}, html("th", {}, "strength"), ...ms.map(([, label]) => html("th", {}, label)), html("th", {}, "first reply")));
  $("sweep-table").querySelector("tbody").replaceChildren(...pts.map((p) => html("tr", {},
    html("td", {}, String(p.strength)),
    ...ms.map(([key, , get]) => {
      const m = p.scores.reduce((a, s) => a + get(s), 0) / p.scores.length;
      return html("td", {}, key === "words" ? m.toFixed(1) : m.toFixed(3));
    }),
    html("td", { class: "text" }, p.texts[0]))));
}

syncRange();
showStrength();
