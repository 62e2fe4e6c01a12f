// semcolor semantic editor: paint the semantic map, the server recolorizes on every released stroke.
// Maps are Uint8Array(width * height) of class indices, row-major, at the display size the server gives.
// Both panes show the photo under one view (scale, offset): zoom and pan move them together, so the map
// and its colorization stay side by side pixel for pixel.
"use strict";

const $ = (id) => document.getElementById(id);
const MIN_SCALE = 0.1, MAX_SCALE = 32, ZOOM_STEP = 1.25;
const state = {
  session: null, photo: 0, width: 0, height: 0,
  predicted: null, current: null, undo: [], redo: [],
  selected: 0, seed: 0, stroke: null, inFlight: false, pending: false, version: 0,
  view: { scale: 1, x: 0, y: 0, fitted: true }, pan: null, spaceDown: false, pointer: null,
};

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.title = text;  // the full message when the one-line status cuts it
  status.classList.toggle("error", isError);
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

// ------------------------------------------------------------------------------------------ the map

function mapColors() {
  return state.session.classes.map((c) => c.typical_color || c.color);
}

function renderOverlay() {
  const canvas = $("overlay");
  const ctx = canvas.getContext("2d");
  if (!state.current) { ctx.clearRect(0, 0, canvas.width, canvas.height); return; }
  const { width, height } = state;
  const image = ctx.createImageData(width, height);
  const palette = mapColors();
  const alpha = Math.round(255 * $("opacity").value / 100);
  const edgeAlpha = Math.min(255, Math.round(alpha * 1.6));
  const map = state.current;
  for (let i = 0; i < map.length; i++) {
    const id = map[i];
    if (id === 255) { image.data[4 * i + 3] = 0; continue; }
    const x = i % width;
    // region borders drawn dark, so that two classes of similar color stay apart on the map
    const edge = (x + 1 < width && map[i + 1] !== id) || (i + width < map.length && map[i + width] !== id);
    const color = palette[id] || [0, 0, 0];
    const shade = edge ? 0.5 : 1;
    image.data[4 * i] = color[0] * shade; image.data[4 * i + 1] = color[1] * shade;
    image.data[4 * i + 2] = color[2] * shade; image.data[4 * i + 3] = edge ? edgeAlpha : alpha;
  }
  ctx.putImageData(image, 0, 0);
}

function renderClasses() {
  const list = $("classes");
  list.replaceChildren();
  let labelColors = 0;
  for (const c of state.session.classes) {
    const item = document.createElement("li");
    item.dataset.classId = c.id;
    item.classList.toggle("selected", c.id === state.selected);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    const color = c.typical_color || c.color;
    swatch.style.background = `rgb(${color.join(",")})`;
    if (c.typical_source === "label" || !c.typical_color) {
      swatch.classList.add("label-color");
      swatch.title = "label color: this class has no typical color (it can be any color)";
      labelColors += 1;
    } else {
      swatch.title = c.typical_source === "world" ? "the color this class has in the training world"
        : "a typical color of this class";
    }
    item.append(swatch, document.createTextNode(c.name));
    if ((c.typical_modes || []).length > 1) {  // a class with several colors (tree: green or autumn)
      const modes = document.createElement("span");
      modes.className = "modes";
      modes.title = "also";
      for (const mode of c.typical_modes.slice(1)) {
        const chip = document.createElement("span");
        chip.style.background = `rgb(${mode.join(",")})`;
        modes.append(chip);
      }
      item.append(modes);
    }
    if (c.id < 9) {
      const key = document.createElement("span");
      key.className = "key";
      key.textContent = String(c.id + 1);
      item.append(key);
    }
    item.addEventListener("click", () => selectClass(c.id));
    list.append(item);
  }
  const note = $("swatch-note");
  note.hidden = labelColors === 0;
  note.textContent = "Striped swatches: label colors of classes without a typical color.";
}

function selectClass(id) {
  if (!state.session.classes.some((c) => c.id === id)) return;
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

function setTool(name) {
  document.querySelector(`input[name=tool][value=${name}]`).checked = true;
  updateBrush();
}

function setSize(value) {
  const size = $("size");
  size.value = Math.max(Number(size.min), Math.min(Number(size.max), value));
  $("size-value").textContent = size.value;
  updateBrush();
}

// ------------------------------------------------------------------------------------------ the view

function applyView() {
  const { scale, x, y } = state.view;
  for (const id of ["edit-stage", "result-stage"]) {
    $(id).style.transform = `translate(${x}px, ${y}px) scale(${scale})`;
    $(id).classList.toggle("pixels", scale >= 2);  // zoomed in: show the map's pixels, not a blur
  }
  $("zoom-value").textContent = `${Math.round(scale * 100)}%`;
  document.body.dataset.zoom = String(scale);
  updateBrush();
}

function fitView() {
  if (!state.width) return;
  const box = $("edit-view").getBoundingClientRect();
  const scale = Math.max(MIN_SCALE, Math.min(box.width / state.width, box.height / state.height));
  state.view = { scale, x: (box.width - state.width * scale) / 2, y: (box.height - state.height * scale) / 2,
                 fitted: true };
  applyView();
}

function zoomAt(factor, cx, cy) {
  const view = state.view;
  const scale = Math.max(MIN_SCALE, Math.min(MAX_SCALE, view.scale * factor));
  // keep the photo point under (cx, cy) where it is
  state.view = { scale, x: cx - (cx - view.x) * scale / view.scale, y: cy - (cy - view.y) * scale / view.scale,
                 fitted: false };
  applyView();
}

function zoomCentered(factor) {
  const box = $("edit-view").getBoundingClientRect();
  zoomAt(factor, box.width / 2, box.height / 2);
}

function viewportPoint(event, viewport) {
  const box = viewport.getBoundingClientRect();
  return [event.clientX - box.left, event.clientY - box.top];
}

function onWheel(event) {
  event.preventDefault();
  const [cx, cy] = viewportPoint(event, event.currentTarget);
  zoomAt(event.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP, cx, cy);
}

function startPan(event) {
  state.pan = { x: event.clientX, y: event.clientY, viewX: state.view.x, viewY: state.view.y };
  event.currentTarget.classList.add("panning");
  event.currentTarget.setPointerCapture(event.pointerId);
}

function movePan(event) {
  state.view = { ...state.view, x: state.pan.viewX + event.clientX - state.pan.x,
                 y: state.pan.viewY + event.clientY - state.pan.y, fitted: false };
  applyView();
}

function endPan(event) {
  state.pan = null;
  event.currentTarget.classList.remove("panning");
}

function isPanGesture(event) {
  return event.button === 1 || event.button === 2 || (event.button === 0 && state.spaceDown);
}

// the brush circle: the brush's footprint at the current zoom, where the pointer is
function updateBrush() {
  const brush = $("brush");
  const editable = state.session && state.session.takes_semantic_map && state.current;
  if (!state.pointer || !editable || state.pan || state.spaceDown) { brush.hidden = true; return; }
  const [px, py] = state.pointer;
  const name = tool();
  const diameter = name === "eyedropper" ? 8 : Number($("size").value) * state.view.scale;
  brush.hidden = false;
  brush.className = name;
  brush.style.width = brush.style.height = `${diameter}px`;
  brush.style.left = `${px - diameter / 2}px`;
  brush.style.top = `${py - diameter / 2}px`;
}

// ------------------------------------------------------------------------------------------ painting

function canvasPoint(event) {
  const rect = $("overlay").getBoundingClientRect();  // includes the view's scale and offset
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

function onEditPointerDown(event) {
  if (isPanGesture(event)) { startPan(event); updateBrush(); return; }
  if (!state.current || event.button !== 0) return;
  const [x, y] = canvasPoint(event);
  if (x < 0 || y < 0 || x >= state.width || y >= state.height) return;
  if (tool() === "eyedropper") {
    const id = state.current[Math.floor(y) * state.width + Math.floor(x)];
    if (id !== 255) selectClass(id);
    return;
  }
  if (!state.session.takes_semantic_map) { setStatus("this model does not take a semantic map: view only"); return; }
  event.currentTarget.setPointerCapture(event.pointerId);
  state.stroke = { before: state.current.slice(), last: [x, y] };
  stamp(x, y);
  renderOverlay();
}

function onEditPointerMove(event) {
  state.pointer = viewportPoint(event, $("edit-view"));
  if (state.pan) { movePan(event); return; }
  updateBrush();
  if (state.stroke) strokeTo(...canvasPoint(event));
}

function onEditPointerUp(event) {
  if (state.pan) { endPan(event); updateBrush(); return; }
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

// ------------------------------------------------------------------------------------------ server

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
    const paths = Object.values(written);
    const folder = paths[0].slice(0, paths[0].lastIndexOf("/") + 1);
    setStatus(`saved ${paths.map((path) => path.slice(path.lastIndexOf("/") + 1)).join(" and ")} in ${folder}`);
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
    $("result").width = info.width; $("result").height = info.height;
    const gray = new Image();
    await new Promise((resolve, reject) => { gray.onload = resolve; gray.onerror = reject; gray.src = `/api/photos/${index}/gray.png`; });
    $("gray").getContext("2d").drawImage(gray, 0, 0);
    if (state.session.has_map) {
      const bytes = new Uint8Array(await (await api(`/api/photos/${index}/map?which=predicted`)).arrayBuffer());
      state.predicted = bytes; state.current = bytes.slice();
    } else {
      state.predicted = null; state.current = null;
    }
    fitView();
    renderOverlay();
    await recolorize();
  } catch (error) {
    setStatus(`cannot load photo: ${error.message}`, true);
    document.body.dataset.state = "error";
  }
}

// ------------------------------------------------------------------------------------------ keys

function onKeyDown(event) {
  if (event.target instanceof HTMLSelectElement) return;
  const ctrl = event.ctrlKey || event.metaKey;
  const key = event.key.toLowerCase();
  if (ctrl) {
    if (key === "z" && !event.shiftKey) { event.preventDefault(); undo(); }
    else if (key === "y" || (key === "z" && event.shiftKey)) { event.preventDefault(); redo(); }
    else if (key === "s") { event.preventDefault(); save(); }
    return;
  }
  if (event.altKey) return;
  if (key === " ") { event.preventDefault(); state.spaceDown = true; updateBrush(); }
  else if (key === "b") setTool("brush");
  else if (key === "e") setTool("eraser");
  else if (key === "i") setTool("eyedropper");
  else if (key === "[") setSize(Number($("size").value) - 2);
  else if (key === "]") setSize(Number($("size").value) + 2);
  else if (key === "+" || key === "=") zoomCentered(ZOOM_STEP);
  else if (key === "-") zoomCentered(1 / ZOOM_STEP);
  else if (key === "0") fitView();
  else if (key === "n" && !$("sample").hidden) { state.seed += 1; recolorize(); }
  else if (/^[1-9]$/.test(key)) selectClass(Number(key) - 1);
}

function onKeyUp(event) {
  if (event.key === " ") { state.spaceDown = false; updateBrush(); }
}

// ------------------------------------------------------------------------------------------ start

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
  $("size").addEventListener("input", () => setSize(Number($("size").value)));
  for (const radio of document.querySelectorAll("input[name=tool]")) radio.addEventListener("change", updateBrush);
  $("zoom-in").addEventListener("click", () => zoomCentered(ZOOM_STEP));
  $("zoom-out").addEventListener("click", () => zoomCentered(1 / ZOOM_STEP));
  $("zoom-fit").addEventListener("click", fitView);
  const edit = $("edit-view");
  edit.classList.toggle("view-only", !s.takes_semantic_map);
  edit.addEventListener("pointerdown", onEditPointerDown);
  edit.addEventListener("pointermove", onEditPointerMove);
  edit.addEventListener("pointerup", onEditPointerUp);
  edit.addEventListener("pointercancel", onEditPointerUp);
  edit.addEventListener("pointerleave", () => { state.pointer = null; updateBrush(); });
  const result = $("result-view");
  result.addEventListener("pointerdown", (event) => { if (event.button <= 2) startPan(event); });
  result.addEventListener("pointermove", (event) => { if (state.pan) movePan(event); });
  result.addEventListener("pointerup", (event) => { if (state.pan) endPan(event); });
  for (const view of [edit, result]) {
    view.addEventListener("wheel", onWheel, { passive: false });
    view.addEventListener("contextmenu", (event) => event.preventDefault());
  }
  document.addEventListener("keydown", onKeyDown);
  document.addEventListener("keyup", onKeyUp);
  window.addEventListener("resize", () => { if (state.view.fitted) fitView(); });
  await loadPhoto(0);
}

main();
