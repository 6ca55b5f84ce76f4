// The attribution explorer: a result of `tiller attribute` (its scores.json) as heatmaps of every
// node kind, layers × positions with the prompt's tokens on the axis, coloured on a diverging
// scale centred on zero; the hovered node's score by every method the run measured; the
// recommended locus outlined; AtP against exact patching where --verify measured it; each pair on
// its own.
import { apiJSON, showError, clearError, showTip, hideTip, svg, html, diverging, fmt, axes } from "./app.js";

const $ = (id) => document.getElementById(id);

let doc = null; // the scores.json shown
let listed = false;

const methodNames = { atp: "AtP", atp_star: "AtP*", graddrop: "GradDrop", exact: "exact" };
const hookOf = {
  resid_pre: "hook_resid_pre", attn_out: "hook_attn_out", mlp_out: "hook_mlp_out",
  head: "attn.hook_z", head_pos: "attn.hook_z", q: "attn.hook_q", k: "attn.hook_k",
};

export function showAttribution() {
  if (listed) return;
  listed = true;
  loadList();
}

async function loadList() {
  const sel = $("attr-result");
  try {
    const list = await apiJSON("/v1/attributions");
    for (const r of list.data) {
      const what = r.metric ? ` — ${r.metric}, ${r.n_pairs} pairs, ${r.layers} layers` : "";
      sel.append(html("option", { value: r.name }, r.name + what));
    }
    if (list.folder === null) sel.title = "this server offers no attribution folder (tiller serve --attributions DIR)";
    if (list.data.length > 0 && doc === null) {
      sel.value = list.data[0].name;
      await openResult(list.data[0].name);
    }
  } catch (e) {
    showError(e.message);
  }
}

$("attr-result").addEventListener("change", (ev) => {
  if (ev.target.value) openResult(ev.target.value);
});

async function openResult(name) {
  try {
    const path = "/v1/attributions/" + name.split("/").map(encodeURIComponent).join("/");
    show(await apiJSON(path), name);
  } catch (e) {
    showError(e.message);
  }
}

// ---- a result dropped on the page or opened from disk: read in the browser, never uploaded ----

$("attr-file").addEventListener("change", (ev) => {
  if (ev.target.files.length) readFile(ev.target.files[0]);
});

addEventListener("dragover", (ev) => {
  ev.preventDefault();
  document.body.classList.add("dropping");
});
addEventListener("dragleave", () => document.body.classList.remove("dropping"));
addEventListener("drop", (ev) => {
  ev.preventDefault();
  document.body.classList.remove("dropping");
  const item = ev.dataTransfer.items && ev.dataTransfer.items[0];
  const entry = item && item.webkitGetAsEntry && item.webkitGetAsEntry();
  if (entry && entry.isDirectory) {
    entry.createReader().readEntries((entries) => {
      const f = entries.find((e) => e.isFile && e.name === "scores.json");
      if (!f) return showError(`${entry.name}: no scores.json in this folder (the --out folder of tiller attribute has one)`);
      f.file((file) => readFile(file, entry.name), (e) => showError(e.message));
    }, (e) => showError(e.message));
  } else if (ev.dataTransfer.files.length) {
    readFile(ev.dataTransfer.files[0]);
  }
});

async function readFile(file, name = file.name) {
  try {
    show(JSON.parse(await file.text()), name);
    location.hash = "#attribution";
  } catch (e) {
    showError(`${name}: ${e.message}`);
  }
}

// check makes sure d is a scores.json before anything draws it.
function check(d) {
  const need = { layers: "number", positions: "number", labels: "object", mean: "object", node_kinds: "object" };
  for (const [k, t] of Object.entries(need)) {
    if (d === null || typeof d[k] !== t) throw new Error(`not a scores.json of tiller attribute: no "${k}"`);
  }
  if (!d.mean.atp) throw new Error(`not a scores.json of tiller attribute: no AtP scores`);
  if (d.labels.length !== d.positions) throw new Error(`labels has ${d.labels.length} entries, positions says ${d.positions}`);
}

function show(d, name) {
  check(d);
  clearError();
  doc = d;
  $("attr-empty").hidden = true;
  $("attr-body").hidden = false;
  const delta = d.corrupt_metric - d.clean_metric;
  const base = (p) => String(p).split("/").filter(Boolean).pop() || p;
  $("attr-summary").title = `pairs: ${d.pairs}\nmodel: ${d.model}`;
  $("attr-summary").textContent = `${name}: ${d.n_pairs} pairs of ${base(d.pairs)} on ${base(d.model)}; metric ${d.metric}: ` +
    `clean ${fmt(d.clean_metric)}, corrupt ${fmt(d.corrupt_metric)} (Δ ${fmt(delta)}), averaged over pairs` + (d.atp_star ? "; with AtP*" : "");
  const kinds = d.node_kinds.filter((k) => d.mean.atp[k]);
  $("attr-kind").replaceChildren(...kinds.map((k) => html("option", { value: k }, k)));
  const pairs = [html("option", { value: "-1" }, `mean over ${d.n_pairs} pairs`)];
  (d.per_pair || []).forEach((p, i) => pairs.push(html("option", { value: String(i) }, `pair ${i + 1}${p.id ? " " + p.id : ""} (line ${p.line})`)));
  $("attr-pair").replaceChildren(...pairs);
  methodsFor();
  render();
}

// methodsFor fills the method menu with those measured for the chosen kind.
function methodsFor() {
  const kind = $("attr-kind").value, sel = $("attr-method"), was = sel.value;
  const ms = Object.keys(methodNames).filter((m) => doc.mean[m] && doc.mean[m][kind]);
  sel.replaceChildren(...ms.map((m) => html("option", { value: m }, methodNames[m])));
  if (ms.includes(was)) sel.value = was;
}

$("attr-kind").addEventListener("change", () => { methodsFor(); render(); });
$("attr-method").addEventListener("change", () => render());
$("attr-pair").addEventListener("change", () => render());

// view is what the controls select: the scores (mean or one pair's), their token labels, the kind.
function view() {
  const pair = Number($("attr-pair").value);
  const p = pair >= 0 ? doc.per_pair[pair] : null;
  return { pair, p, scores: p ? p.scores : doc.mean, labels: p ? p.labels : doc.labels, kind: $("attr-kind").value, method: $("attr-method").value };
}

// layout lays a grid out as rows and columns: [layer][pos], [layer][head] (kind "head") or
// [layer][head][pos] (one row per layer and head).
function layout(kind, g, labels) {
  const L = g.length;
  if (kind === "head") {
    const H = g[0].length;
    return {
      rows: L, cols: H, heads: 0,
      rowLabel: (r) => `L${r}`, colLabel: (c) => `H${c}`,
      node: (r, c) => ({ layer: r, head: c, pos: -1 }), at: (g, r, c) => g[r][c],
    };
  }
  if (Array.isArray(g[0][0])) {
    const H = g[0].length;
    return {
      rows: L * H, cols: labels.length, heads: H,
      rowLabel: (r) => (H <= 8 || r % H === 0 ? `L${Math.floor(r / H)} H${r % H}` : ""), colLabel: (c) => labels[c],
      node: (r, c) => ({ layer: Math.floor(r / H), head: r % H, pos: c }), at: (g, r, c) => g[Math.floor(r / H)][r % H][c],
    };
  }
  return {
    rows: L, cols: labels.length, heads: 0,
    rowLabel: (r) => `L${r}`, colLabel: (c) => labels[c],
    node: (r, c) => ({ layer: r, head: -1, pos: c }), at: (g, r, c) => g[r][c],
  };
}

function nodeName(kind, n, labels) {
  let s = `blocks.${n.layer}.${hookOf[kind] || kind}`;
  if (n.head >= 0) s += ` ${kind === "k" ? "kv head" : "head"} ${n.head}`;
  if (n.pos < 0) return s + " (all positions)";
  const fromEnd = labels.length - 1 - n.pos;
  s += ` @−${fromEnd}`;
  if (labels[n.pos] !== `−${fromEnd}`) s += ` "${labels[n.pos]}"`;
  return s;
}

// nodeTip is the tooltip of one node: its name and its score by every method measured.
function nodeTip(v, lay, r, c) {
  const rows = [];
  for (const m of Object.keys(methodNames)) {
    const g = v.scores[m] && v.scores[m][v.kind];
    if (!g) continue;
    const x = lay.at(g, r, c);
    rows.push(html("tr", {}, html("td", {}, methodNames[m]),
      html("td", { class: "v", "data-method": m }, x === null ? (m === "exact" ? "not measured" : "—") : fmt(x))));
  }
  if (!v.scores.exact) rows.push(html("tr", {}, html("td", {}, "exact"), html("td", { class: "v" }, "not measured (--verify)")));
  return html("div", {}, html("div", { class: "node" }, nodeName(v.kind, lay.node(r, c), v.labels)), html("table", {}, ...rows));
}

function render() {
  hideTip();
  const v = view();
  renderPairInfo(v);
  renderHeatmap(v);
  renderScatter(v);
}

function renderPairInfo(v) {
  if (!v.p) {
    $("attr-pair-info").textContent = "";
    return;
  }
  const m = v.p.metric || {};
  const what = m.logprob !== undefined ? `log-probability of "${m.logprob}"` : m.logit_diff ? `logit("${m.logit_diff[0]}") − logit("${m.logit_diff[1]}")` : "";
  $("attr-pair-info").textContent = `${what}: clean ${fmt(v.p.clean_metric)}, corrupt ${fmt(v.p.corrupt_metric)} ` +
    `(Δ ${fmt(v.p.corrupt_metric - v.p.clean_metric)}); ${v.p.tokens.length} tokens`;
}

function renderHeatmap(v) {
  const g = v.scores[v.method] && v.scores[v.method][v.kind];
  const box = $("heatmap");
  $("heatmap-title").textContent = `${methodNames[v.method]} of ${v.kind} nodes, ${v.p ? "this pair" : "mean over pairs"}`;
  if (!g) {
    box.replaceChildren(html("p", { class: "hint" }, "not computed for this kind"));
    return;
  }
  const lay = layout(v.kind, g, v.labels);
  let max = 0;
  for (let r = 0; r < lay.rows; r++) for (let c = 0; c < lay.cols; c++) {
    const x = lay.at(g, r, c);
    if (x !== null) max = Math.max(max, Math.abs(x));
  }
  const cw = Math.max(12, Math.min(24, Math.floor(800 / lay.cols)));
  const ch = lay.heads ? 12 : 24;
  const left = 64, top = 8, bottom = 96, legend = 90;
  const width = left + lay.cols * cw + legend, height = top + lay.rows * ch + bottom;
  const s = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, id: "heatmap-svg" });
  const cells = svg("g", { class: "cells" });
  for (let r = 0; r < lay.rows; r++) {
    for (let c = 0; c < lay.cols; c++) {
      const x = lay.at(g, r, c);
      cells.append(svg("rect", {
        class: "cell", x: left + c * cw, y: top + r * ch, width: cw - 1, height: ch - 1, "data-r": r, "data-c": c,
        fill: x === null ? "#e4e6ea" : diverging(max > 0 ? x / max : 0),
      }));
    }
    const label = lay.rowLabel(r);
    if (label) s.append(svg("text", { x: left - 6, y: top + r * ch + ch / 2 + 3, "text-anchor": "end" }, label));
  }
  s.append(cells);
  for (let c = 0; c < lay.cols; c++) {
    const x = left + c * cw + cw / 2, y = top + lay.rows * ch + 8;
    const label = String(lay.colLabel(c));
    s.append(svg("text", { transform: `translate(${x} ${y}) rotate(-60)`, "text-anchor": "end" }, label.length > 14 ? label.slice(0, 13) + "…" : label));
  }
  drawLegend(s, left + lay.cols * cw + 24, top, Math.min(160, lay.rows * ch), max);
  markLocus(s, v, lay, { left, top, cw, ch });
  cells.addEventListener("mouseover", (ev) => {
    const t = ev.target;
    if (t.classList.contains("cell")) showTip(ev, nodeTip(v, lay, Number(t.dataset.r), Number(t.dataset.c)));
  });
  cells.addEventListener("mousemove", (ev) => {
    const t = ev.target;
    if (t.classList.contains("cell")) showTip(ev, nodeTip(v, lay, Number(t.dataset.r), Number(t.dataset.c)));
  });
  cells.addEventListener("mouseleave", hideTip);
  box.replaceChildren(s);
}

function drawLegend(s, x, y, h, max) {
  const grad = svg("linearGradient", { id: "legend-grad", x1: 0, y1: 1, x2: 0, y2: 0 });
  for (let i = 0; i <= 8; i++) grad.append(svg("stop", { offset: `${i * 12.5}%`, "stop-color": diverging(i / 4 - 1) }));
  const defs = svg("defs");
  defs.append(grad);
  s.append(defs);
  s.append(svg("rect", { x, y, width: 12, height: h, fill: "url(#legend-grad)", stroke: "#8a93a3", "stroke-width": 0.5 }));
  s.append(svg("text", { x: x + 16, y: y + 8 }, fmt(max)));
  s.append(svg("text", { x: x + 16, y: y + h / 2 + 3 }, "0"));
  s.append(svg("text", { x: x + 16, y: y + h }, fmt(-max)));
}

// markLocus outlines the recommended locus: its layer's resid_pre nodes at its positions, counted
// from the end of the prompt.
function markLocus(s, v, lay, { left, top, cw, ch }) {
  const loc = doc.locus;
  if (!loc) {
    $("locus").textContent = "";
    return;
  }
  const at = loc.positions_from_end.map((e) => `−${e}` + (v.labels[v.labels.length - 1 - e] !== `−${e}` ? ` "${v.labels[v.labels.length - 1 - e]}"` : ""));
  $("locus").textContent = `Recommended locus (outlined on resid_pre): ${loc.hook} at positions from the end ${at.join(", ")}; score ${fmt(loc.score)}.`;
  if (v.kind !== "resid_pre") return;
  for (const e of loc.positions_from_end) {
    const c = v.labels.length - 1 - e;
    if (c < 0) continue;
    s.append(svg("rect", { class: "locus", x: left + c * cw - 1, y: top + loc.layer * ch - 1, width: cw + 1, height: ch + 1 }));
  }
}

function pearson(xs, ys) {
  const n = xs.length, mx = xs.reduce((a, b) => a + b, 0) / n, my = ys.reduce((a, b) => a + b, 0) / n;
  let sxy = 0, sxx = 0, syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) ** 2;
    syy += (ys[i] - my) ** 2;
  }
  return sxx > 0 && syy > 0 ? sxy / Math.sqrt(sxx * syy) : NaN;
}

function renderScatter(v) {
  const box = $("scatter");
  const atp = v.scores.atp && v.scores.atp[v.kind], exact = v.scores.exact && v.scores.exact[v.kind];
  renderAgreement();
  if (!exact) {
    box.replaceChildren(html("p", { class: "hint" }, "No exact values in this result: tiller attribute --verify N (or all) patches nodes exactly."));
    return;
  }
  const lay = layout(v.kind, atp, v.labels);
  const pts = [];
  for (let r = 0; r < lay.rows; r++) for (let c = 0; c < lay.cols; c++) {
    const x = lay.at(atp, r, c), y = lay.at(exact, r, c);
    if (x !== null && y !== null) pts.push({ x, y, r, c });
  }
  if (pts.length === 0) {
    box.replaceChildren(html("p", { class: "hint" }, `No ${v.kind} node was patched exactly${v.p ? " in this pair" : ""}.`));
    return;
  }
  const xs = pts.map((p) => p.x), ys = pts.map((p) => p.y);
  const pad = (lo, hi) => (hi > lo ? [lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)] : [lo - 1, hi + 1]);
  const [x0, x1] = pad(Math.min(...xs, 0), Math.max(...xs, 0)), [y0, y1] = pad(Math.min(...ys, 0), Math.max(...ys, 0));
  const left = 60, top = 10, width = 380, height = 280;
  const sx = (x) => left + ((x - x0) / (x1 - x0)) * width, sy = (y) => top + height - ((y - y0) / (y1 - y0)) * height;
  const s = svg("svg", { width: left + width + 20, height: top + height + 44, id: "scatter-svg" });
  axes(s, { sx, sy, x0, x1, y0, y1, xlabel: "AtP", ylabel: "exact patching", left, top, width, height });
  const lo = Math.max(x0, y0), hi = Math.min(x1, y1);
  if (hi > lo) s.append(svg("line", { class: "identity", x1: sx(lo), y1: sy(lo), x2: sx(hi), y2: sy(hi) }));
  const g = svg("g", {});
  for (const p of pts) g.append(svg("circle", { class: "pt", cx: sx(p.x), cy: sy(p.y), r: 4, fill: "#2b3a55", "data-r": p.r, "data-c": p.c }));
  g.addEventListener("mouseover", (ev) => {
    const t = ev.target;
    if (t.classList.contains("pt")) showTip(ev, nodeTip(v, lay, Number(t.dataset.r), Number(t.dataset.c)));
  });
  g.addEventListener("mouseleave", hideTip);
  s.append(g);
  const r = pearson(xs, ys);
  box.replaceChildren(s, html("p", { id: "scatter-r", class: "summary" }, `${v.kind}${v.p ? ", this pair" : ""}: n = ${pts.length}, Pearson r = ${Number.isNaN(r) ? "—" : r.toFixed(3)}`));
}

// renderAgreement repeats the run's own agreement figures, over every node it patched.
function renderAgreement() {
  const ver = doc.verify;
  if (!ver) {
    $("agreement").textContent = "";
    return;
  }
  if (ver.skipped) {
    $("agreement").textContent = `Exact patching was skipped: ${ver.skipped}.`;
    return;
  }
  const parts = (ver.agreement || []).map((a) => `${methodNames[a.method] || a.method} ${a.kind}: n=${a.n}, Pearson ${a.pearson === null ? "—" : a.pearson.toFixed(2)}, Spearman ${a.spearman === null ? "—" : a.spearman.toFixed(2)}`);
  $("agreement").textContent = `The run patched ${ver.sample || ver.nodes + " nodes"}. Agreement over the mean scores: ${parts.join("; ")}.`;
}
