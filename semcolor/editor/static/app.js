// semcolor semantic editor: paint the semantic map, the server recolorizes on every released stroke.
// Maps are Uint8Array(width * height) of class indices, row-major, at the display size the server gives.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  session: null, photo: 0, width: 0, height: 0,
  predicted: null, current: null, undo: [], redo: [],
  selected: 0, seed: 0, stroke: null, inFlight: false, pending: false, version: 0,
};

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error; } catch (_) { /* not JSON */ }
    throw new Error(`${response.status}: ${message}`);
  }
  return response;
}

function colors() {
  return state.session.classes.map((c) => c.color);
}

function renderOverlay() {
  const canvas = $("overlay");
  if (!state.current) { canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height); return; }
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(state.width, state.height);
  const palette = colors();
  const alpha = Math.round(255 * $("opacity").value / 100);
  for (let i = 0; i < state.current.length; i++) {
    const color = palette[state.current[i]] || [0, 0, 0];
    image.data[4 * i] = color[0]; image.data[4 * i + 1] = color[1]; image.data[4 * i + 2] = color[2];
    image.data[4 * i + 3] = state.current[i] === 255 ? 0 : alpha;
  }
  ctx.putImageData(image, 0, 0);
}

function renderClasses() {
  const list = $("classes");
  list.replaceChildren();
  for (const c of state.session.classes) {
    const item = document.createElement("li");
    item.dataset.classId = c.id;
    item.classList.toggle("selected", c.id === state.selected);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${c.color.join(",")})`;
    item.append(swatch, document.createTextNode(`${c.id}: ${c.name}`));
    item.addEventListener("click", () => selectClass(c.id));
    list.append(item);
  }
}

function selectClass(id) {
  state.selected = id;
  for (const item of $("classes").children) item.classList.toggle("selected", Number(item.dataset.classId) === id);
}

function updateButtons() {
  $("undo").disabled = state.undo.length === 0;
  $("redo").disabled = state.redo.length === 0;
}

function tool() {
  return document.querySelector("input[name=tool]:checked").value;
}

function canvasPoint(event) {
  const rect = $("overlay").getBoundingClientRect();
  return [(event.clientX - rect.left) * state.width / rect.width, (event.clientY - rect.top) * state.height / rect.height];
}

function stamp(x, y) {
  const radius = Number($("size").value) / 2;
  const erase = tool() === "eraser";
  const x0 = Math.max(0, Math.floor(x - radius)), x1 = Math.min(state.width - 1, Math.ceil(x + radius));
  const y0 = Math.max(0, Math.floor(y - radius)), y1 = Math.min(state.height - 1, Math.ceil(y + radius));
  for (let py = y0; py <= y1; py++) {
    for (let px = x0; px <= x1; px++) {
      const dx = px + 0.5 - x, dy = py + 0.5 - y;
      if (dx * dx + dy * dy <= radius * radius) {
        const i = py * state.width + px;
        state.current[i] = erase ? state.predicted[i] : state.selected;
      }
    }
  }
}

function strokeTo(x, y) {
  const [lastX, lastY] = state.stroke.last;
  const steps = Math.max(1, Math.ceil(Math.hypot(x - lastX, y - lastY) / Math.max(1, Number($("size").value) / 4)));
  for (let s = 1; s <= steps; s++) stamp(lastX + (x - lastX) * s / steps, lastY + (y - lastY) * s / steps);
  state.stroke.last = [x, y];
  renderOverlay();
}

function onPointerDown(event) {
  if (!state.current || event.button !== 0) return;
  const [x, y] = canvasPoint(event);
  if (tool() === "eyedropper") {
    const px = Math.min(state.width - 1, Math.floor(x)), py = Math.min(state.height - 1, Math.floor(y));
    const id = state.current[py * state.width + px];
    if (id !== 255) selectClass(id);
    return;
  }
  if (!state.session.takes_semantic_map) { setStatus("this model does not take a semantic map: view only"); return; }
  $("overlay").setPointerCapture(event.pointerId);
  state.stroke = { before: state.current.slice(), last: [x, y] };
  stamp(x, y);
  renderOverlay();
}

function onPointerMove(event) {
  if (state.stroke) strokeTo(...canvasPoint(event));
}

function onPointerUp(event) {
  if (!state.stroke) return;
  strokeTo(...canvasPoint(event));
  const before = state.stroke.before;
  state.stroke = null;
  if (before.every((v, i) => v === state.current[i])) return;
  state.undo.push(before);
  state.redo = [];
  updateButtons();
  recolorize();
}

function mapBody() {
  return state.session.takes_semantic_map && state.current ? state.current : new Uint8Array(0);
}

async function recolorize() {
  if (state.inFlight) { state.pending = true; return; }
  state.inFlight = true;
  document.body.dataset.state = "busy";
  setStatus("colorizing...");
  try {
    const started = performance.now();
    const response = await api(`/api/photos/${state.photo}/colorize?seed=${state.seed}`, {
      method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: mapBody(),
    });
    const blob = await response.blob();
    await showResult(URL.createObjectURL(blob));
    setStatus(`colorized in ${Math.round(performance.now() - started)} ms`);
  } catch (error) {
    setStatus(`colorize failed: ${error.message}`, true);
  } finally {
    state.inFlight = false;
    if (state.pending) { state.pending = false; recolorize(); } else document.body.dataset.state = "idle";
  }
}

function showResult(url) {
  return new Promise((resolve, reject) => {
    const image = $("result");
    const old = image.src;
    image.onload = () => {
      if (old.startsWith("blob:")) URL.revokeObjectURL(old);
      state.version += 1;
      document.body.dataset.resultVersion = String(state.version);
      resolve();
    };
    image.onerror = () => reject(new Error("result image could not be shown"));
    image.src = url;
  });
}

function undo() {
  if (!state.undo.length) return;
  state.redo.push(state.current);
  state.current = state.undo.pop();
  updateButtons(); renderOverlay(); recolorize();
}

function redo() {
  if (!state.redo.length) return;
  state.undo.push(state.current);
  state.current = state.redo.pop();
  updateButtons(); renderOverlay(); recolorize();
}

async function save() {
  document.body.dataset.state = "busy";
  setStatus("saving at full resolution...");
  try {
    const response = await api(`/api/photos/${state.photo}/save?seed=${state.seed}`, {
      method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: mapBody(),
    });
    const written = await response.json();
    document.body.dataset.saved = JSON.stringify(written);
    setStatus(`saved ${Object.values(written).join(", ")}`);
  } catch (error) {
    setStatus(`save failed: ${error.message}`, true);
  } finally {
    document.body.dataset.state = state.inFlight ? "busy" : "idle";
  }
}

async function loadPhoto(index) {
  document.body.dataset.state = "loading";
  setStatus("loading photo and predicting its map...");
  state.photo = index; state.undo = []; state.redo = []; state.seed = 0;
  updateButtons();
  try {
    const info = await (await api(`/api/photos/${index}`)).json();
    state.width = info.width; state.height = info.height;
    for (const id of ["gray", "overlay"]) { $(id).width = info.width; $(id).height = info.height; }
    const gray = new Image();
    await new Promise((resolve, reject) => { gray.onload = resolve; gray.onerror = reject; gray.src = `/api/photos/${index}/gray.png`; });
    $("gray").getContext("2d").drawImage(gray, 0, 0);
    if (state.session.has_map) {
      const bytes = new Uint8Array(await (await api(`/api/photos/${index}/map?which=predicted`)).arrayBuffer());
      state.predicted = bytes; state.current = bytes.slice();
    } else {
      state.predicted = null; state.current = null;
    }
    renderOverlay();
    await recolorize();
  } catch (error) {
    setStatus(`cannot load photo: ${error.message}`, true);
    document.body.dataset.state = "error";
  }
}

async function main() {
  try {
    state.session = await (await api("/api/session")).json();
  } catch (error) {
    setStatus(`cannot reach the editor server: ${error.message}`, true);
    return;
  }
  const s = state.session;
  $("model").textContent = `model: ${s.model}`;
  for (const p of s.photos) $("photo").append(new Option(p.name, p.index));
  $("photo").addEventListener("change", () => loadPhoto(Number($("photo").value)));
  renderClasses();
  $("sample").hidden = !s.supports_samples;
  $("sample").addEventListener("click", () => { state.seed += 1; recolorize(); });
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("save").addEventListener("click", save);
  $("opacity").addEventListener("input", renderOverlay);
  $("size").addEventListener("input", () => { $("size-value").textContent = $("size").value; });
  const overlay = $("overlay");
  overlay.addEventListener("pointerdown", onPointerDown);
  overlay.addEventListener("pointermove", onPointerMove);
  overlay.addEventListener("pointerup", onPointerUp);
  overlay.addEventListener("pointercancel", onPointerUp);
  document.addEventListener("keydown", (event) => {
    if (!(event.ctrlKey || event.metaKey)) return;
    if (event.key === "z" && !event.shiftKey) { event.preventDefault(); undo(); }
    if (event.key === "y" || (event.key === "z" && event.shiftKey)) { event.preventDefault(); redo(); }
  });
  await loadPhoto(0);
}

main();
