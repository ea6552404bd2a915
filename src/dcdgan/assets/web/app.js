// dcdgan's static page: translate the picked image with the exported generator, in this browser.
// Preprocessing is dcdgan translate's: the model's channel count (grayscale as PIL's "L", transparent pixels on
// white), values in [-1, 1], reflection padding on the bottom and right to the net's size multiple, the output
// cropped back and rounded as floor((clip(y, -1, 1) + 1) * 127.5 + 0.5).
// URL parameters: ?ep=wasm|webgpu (default: webgpu when the browser offers an adapter), ?threads=N,
// ?runs=N (timed runs after the first, default 3), ?isolate=0 (no service-worker reload).
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const state = (window.dcdgan = { ready: false, error: null, isolated: false, backend: null, threads: 1, note: "" });

function say(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
  if (error) state.error = text;
}

// Threads need cross-origin isolation; sw.js adds the headers a plain static server leaves out. Resolves true
// when the page is about to reload under the service worker (nothing else should start then).
async function isolate() {
  if (crossOriginIsolated) return false;
  if (params.get("isolate") === "0") return false;
  if (!("serviceWorker" in navigator) || !isSecureContext) return false;
  try {
    await navigator.serviceWorker.register("sw.js");
    await navigator.serviceWorker.ready;
  } catch (err) {
    state.note = `service worker refused (${err.message})`;
    return false;
  }
  if (sessionStorage.getItem("dcdgan-isolation-reload")) return false; // reloaded once already: do not loop
  sessionStorage.setItem("dcdgan-isolation-reload", "1");
  location.reload();
  return true;
}

function threadsReason() {
  if (crossOriginIsolated) return "";
  if (params.get("isolate") === "0") return "1 thread: ?isolate=0";
  if (!isSecureContext) return "1 thread: not a secure context (https or localhost), so no service worker to add cross-origin isolation";
  return `1 thread: the page is not cross-origin isolated (the server sends no COOP/COEP headers${state.note ? "; " + state.note : ""})`;
}

async function chooseBackend() {
  const asked = params.get("ep");
  if (asked === "wasm" || asked === "webgpu") {
    state.webgpu = `?ep=${asked}`;
    return asked;
  }
  if (!navigator.gpu) {
    state.webgpu = "no navigator.gpu";
    return "wasm";
  }
  try {
    const adapter = await navigator.gpu.requestAdapter();
    state.webgpu = adapter ? "adapter" : "no adapter";
    return adapter ? "webgpu" : "wasm";
  } catch (err) {
    state.webgpu = `requestAdapter failed (${err.message})`;
    return "wasm";
  }
}

// numpy's "reflect" padding (no edge repeat), periodic for pads longer than the side; "edge" for a 1-pixel side.
function reflect(i, n) {
  if (n === 1) return 0;
  const m = i % (2 * n - 2);
  return m < n ? m : 2 * n - 2 - m;
}

function toTensorData(rgba, w, h, channels, multiple) {
  const H = Math.ceil(h / multiple) * multiple;
  const W = Math.ceil(w / multiple) * multiple;
  const data = new Float32Array(channels * H * W);
  const plane = H * W;
  for (let y = 0; y < H; y++) {
    const sy = reflect(y, h);
    for (let x = 0; x < W; x++) {
      const i = (sy * w + reflect(x, w)) * 4;
      let r = rgba[i], g = rgba[i + 1], b = rgba[i + 2];
      const a = rgba[i + 3];
      if (a !== 255) { // transparent pixels become white, as dcdgan.data.to_mode does
        r = Math.round((r * a + 255 * (255 - a)) / 255);
        g = Math.round((g * a + 255 * (255 - a)) / 255);
        b = Math.round((b * a + 255 * (255 - a)) / 255);
      }
      const o = y * W + x;
      if (channels === 1) {
        data[o] = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) / 127.5 - 1; // PIL's RGB -> L
      } else {
        data[o] = r / 127.5 - 1;
        data[plane + o] = g / 127.5 - 1;
        data[2 * plane + o] = b / 127.5 - 1;
      }
    }
  }
  return { data, dims: [1, channels, H, W] };
}

function drawOutput(canvas, out, dims, w, h) {
  const [, C, H, W] = dims;
  const image = new ImageData(w, h);
  const level = (v) => Math.floor((Math.min(1, Math.max(-1, v)) + 1) * 127.5 + 0.5);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const o = y * W + x;
      const p = (y * w + x) * 4;
      const r = level(out[o]);
      image.data[p] = r;
      image.data[p + 1] = C === 1 ? r : level(out[H * W + o]);
      image.data[p + 2] = C === 1 ? r : level(out[2 * H * W + o]);
      image.data[p + 3] = 255;
    }
  }
  showCanvas(canvas, w, h);
  canvas.getContext("2d").putImageData(image, 0, 0);
}

function showCanvas(canvas, w, h) {
  canvas.width = w;
  canvas.height = h;
  const scale = Math.max(1, Math.floor(256 / Math.max(w, h))); // small images shown enlarged, nearest
  canvas.style.width = `${w * scale}px`;
  canvas.style.height = `${h * scale}px`;
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

async function main() {
  if (await isolate()) return;
  state.isolated = crossOriginIsolated;
  const model = await (await fetch("model.json")).json();
  state.model = model;
  $("about").textContent += ` Model: ${model.netG} (ngf ${model.ngf}), ${(model.params / 1e6).toFixed(3)} M params, ` +
    `${(model.macs_256 / 1e9).toFixed(2)} GMACs at 256 px; ${model.input_nc} -> ${model.output_nc} channels.`;

  let backend = await chooseBackend();
  const hardware = navigator.hardwareConcurrency || 1;
  const threads = crossOriginIsolated ? Math.max(1, Number(params.get("threads")) || Math.min(4, hardware)) : 1;
  say(`loading onnxruntime-web (${backend === "webgpu" ? "WebGPU build, 29 MB" : "wasm build, 15 MB"}) and the model...`);
  const ort = await import(backend === "webgpu" ? "./ort/ort.webgpu.min.mjs" : "./ort/ort.wasm.min.mjs");
  ort.env.wasm.numThreads = threads;
  let session;
  try {
    session = await ort.InferenceSession.create(model.model, { executionProviders: [backend], graphOptimizationLevel: "all" });
  } catch (err) {
    if (backend !== "webgpu") throw err;
    state.note = `WebGPU session failed (${err.message}); running on wasm`;
    backend = "wasm"; // the WebGPU build carries the wasm kernels too
    session = await ort.InferenceSession.create(model.model, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  }
  Object.assign(state, { backend, threads, hardware, ort_version: ort.env.versions?.web ?? "" });
  const reason = threadsReason();
  $("runtime").textContent = `onnxruntime-web ${state.ort_version}, ${backend === "webgpu" ? "WebGPU" : "wasm SIMD"}, ` +
    `${threads} thread${threads > 1 ? "s" : ""} of ${hardware} logical core${hardware > 1 ? "s" : ""}` +
    `${reason ? " (" + reason + ")" : ""}${state.note ? "; " + state.note : ""}` +
    `${backend === "wasm" && state.webgpu !== "?ep=wasm" ? "; WebGPU: " + state.webgpu : ""}.`;
  state.threads_reason = reason;
  $("file").disabled = false;
  $("file").addEventListener("change", () => $("file").files[0] && translate($("file").files[0], session, ort, model));
  say("ready: pick an image");
  state.ready = true;
}

async function translate(file, session, ort, model) {
  $("file").disabled = true;
  state.done = false;
  try {
    say(`translating ${file.name}...`);
    const bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    let w = bitmap.width, h = bitmap.height;
    const maxSide = Number($("max-side").value);
    const shrink = maxSide > 0 && Math.max(w, h) > maxSide ? maxSide / Math.max(w, h) : 1;
    const note = shrink < 1 ? `, shrunk from ${w}x${h}` : "";
    w = Math.max(1, Math.round(w * shrink));
    h = Math.max(1, Math.round(h * shrink));
    const input = $("input");
    showCanvas(input, w, h);
    const ctx = input.getContext("2d", { willReadFrequently: true });
    ctx.imageSmoothingQuality = "high";
    ctx.clearRect(0, 0, w, h);
    ctx.drawImage(bitmap, 0, 0, w, h);
    const rgba = ctx.getImageData(0, 0, w, h).data;
    $("input-caption").textContent = `input ${w}x${h}${note}`;
    const x = toTensorData(rgba, w, h, model.input_nc, model.size_multiple);
    const feeds = { [session.inputNames[0]]: new ort.Tensor("float32", x.data, x.dims) };
    let t0 = performance.now();
    let result = await session.run(feeds);
    const first = performance.now() - t0;
    const y = result[session.outputNames[0]];
    const out = y.data instanceof Float32Array ? y.data : await y.getData();
    drawOutput($("output"), out, y.dims, w, h);
    $("output-caption").textContent = `output ${w}x${h}`;
    state.input = x;
    state.output = { data: out, dims: y.dims };
    say(`timing ${file.name}...`);
    const runs = [];
    for (let i = 0; i < Math.max(1, Number(params.get("runs")) || 3); i++) {
      t0 = performance.now();
      result = await session.run(feeds);
      if (result[session.outputNames[0]].location !== "cpu") await result[session.outputNames[0]].getData();
      runs.push(performance.now() - t0);
    }
    state.ms = { first, runs, median: median(runs) };
    $("timing").textContent = `${state.ms.median.toFixed(1)} ms per image (${w}x${h}, median of ${runs.length} runs after the first, ` +
      `which took ${first.toFixed(1)} ms) on ${state.backend === "webgpu" ? "WebGPU" : "wasm"}, ${state.threads} thread${state.threads > 1 ? "s" : ""}`;
    say(`translated ${file.name}`);
  } catch (err) {
    say(`error: ${err.message ?? err}`, true);
  } finally {
    state.done = true;
    $("file").disabled = false;
  }
}

main().catch((err) => say(`error: ${err.message ?? err}`, true));
