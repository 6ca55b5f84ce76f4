// The workbench page: two views over tiller's public API. Everything here runs in the browser;
// the server only answers the API (chat completions with steering, the vectors list, text scores,
// and the read-only attribution results).
import { showAttribution } from "./attribution.js";
import { showSteering } from "./steering.js";

// ---- the API ----

const keyName = "tiller-api-key";

// api calls path and returns the response, or throws an Error carrying the API's message. A 401
// asks for the server's API key, which the tab keeps for its session.
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const key = sessionStorage.getItem(keyName);
  if (key) headers["Authorization"] = "Bearer " + key;
  const resp = await fetch(path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
  if (resp.ok) return resp;
  let msg = `${method} ${path}: ${resp.status} ${resp.statusText}`;
  try {
    const e = (await resp.json()).error;
    if (e && e.message) msg = `${method} ${path}: ${e.message}`;
  } catch (_) { /* not a JSON error body */ }
  if (resp.status === 401) document.getElementById("key-form").hidden = false;
  const err = new Error(msg);
  err.status = resp.status;
  throw err;
}

export async function apiJSON(path, opts) {
  return (await api(path, opts)).json();
}

document.getElementById("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(keyName, document.getElementById("api-key").value);
  location.reload();
});

// ---- errors ----

export function showError(msg) {
  const el = document.getElementById("error");
  el.textContent = msg;
  el.hidden = false;
}

export function clearError() {
  document.getElementById("error").hidden = true;
}

// ---- the tooltip ----

const tip = document.getElementById("tip");

// showTip places the tooltip beside the pointer with the given content (a DOM node).
export function showTip(ev, content) {
  tip.replaceChildren(content);
  tip.hidden = false;
  const pad = 14;
  const w = tip.offsetWidth, h = tip.offsetHeight;
  let x = ev.clientX + pad, y = ev.clientY + pad;
  if (x + w > innerWidth) x = ev.clientX - w - pad;
  if (y + h > innerHeight) y = ev.clientY - h - pad;
  tip.style.left = Math.max(0, x) + "px";
  tip.style.top = Math.max(0, y) + "px";
}

export function hideTip() {
  tip.hidden = true;
}

// ---- drawing ----

const svgNS = "http://www.w3.org/2000/svg";

// el makes an SVG element with attributes; text content when given.
export function svg(name, attrs = {}, text) {
  const e = document.createElementNS(svgNS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// html makes an HTML element with attributes and children (strings become text).
export function html(name, attrs = {}, ...children) {
  const e = document.createElement(name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

// diverging maps t in [-1, 1] to a blue–white–red colour (ColorBrewer RdBu), white at 0.
const rdbu = [[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43]];
export function diverging(t) {
  t = Math.max(-1, Math.min(1, t));
  const x = (t + 1) * 2; // 0..4 over the stops
  const i = Math.min(3, Math.floor(x)), f = x - i;
  const c = rdbu[i].map((a, k) => Math.round(a + f * (rdbu[i + 1][k] - a)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

// fmt writes a score with 4 significant digits and its sign.
export function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  const s = Number(v).toPrecision(4);
  return v > 0 ? "+" + s : s;
}

// ticks are about n round values spanning [lo, hi].
export function ticks(lo, hi, n = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

// axes draws a plot frame into g: x and y ticks for linear scales sx, sy over [x0,x1]×[y0,y1].
export function axes(g, { sx, sy, x0, x1, y0, y1, xlabel, ylabel, left, top, width, height }) {
  const ax = svg("g", { class: "axis" });
  ax.append(svg("line", { x1: left, y1: top + height, x2: left + width, y2: top + height }));
  ax.append(svg("line", { x1: left, y1: top, x2: left, y2: top + height }));
  for (const v of ticks(x0, x1)) {
    ax.append(svg("line", { x1: sx(v), y1: top + height, x2: sx(v), y2: top + height + 4 }));
    ax.append(svg("text", { x: sx(v), y: top + height + 15, "text-anchor": "middle" }, +v.toPrecision(3)));
  }
  for (const v of ticks(y0, y1)) {
    ax.append(svg("line", { x1: left - 4, y1: sy(v), x2: left, y2: sy(v) }));
    ax.append(svg("text", { x: left - 7, y: sy(v) + 3, "text-anchor": "end" }, +v.toPrecision(3)));
  }
  ax.append(svg("text", { x: left + width / 2, y: top + height + 32, "text-anchor": "middle" }, xlabel));
  ax.append(svg("text", { x: 12, y: top + height / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${top + height / 2})` }, ylabel));
  g.append(ax);
}

// ---- views ----

const views = { attribution: showAttribution, steering: showSteering };

function route() {
  const name = views[location.hash.slice(1)] ? location.hash.slice(1) : "attribution";
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== name;
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.dataset.view === name);
  hideTip();
  views[name]();
}

addEventListener("hashchange", route);

apiJSON("/v1/models").then((m) => {
  document.getElementById("model").textContent = m.data.map((d) => d.id).join(", ");
}).catch((e) => showError(e.message));
route();
