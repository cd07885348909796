// The chat page: loads the model in a Worker, streams replies into the log, shows load progress, speed
// and errors. Text is inserted with textContent only (model output is never parsed as HTML).

import { CreateWebWorkerEngine, WebWorkerEngine } from "../runtime/index.js";

const $ = (/** @type {string} */ id) => /** @type {any} */ (document.getElementById(id));
const ui = {
  model: $("model"),
  loadBar: $("load-bar"),
  loadText: $("load-text"),
  error: $("error"),
  errorTitle: $("error-title"),
  errorMessage: $("error-message"),
  errorTip: $("error-tip"),
  log: $("log"),
  empty: $("empty"),
  form: $("composer"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
  stats: $("stats"),
  clear: $("clear"),
};
const manifestUrl = new URL("../manifest.json", import.meta.url).href;

/** @type {{engine: WebWorkerEngine | null, messages: {role: string, content: string}[], info: any}} */
const app = { engine: null, messages: [], info: null };
/** @type {any} */ (window).webbuildApp = app; // for tests and the console

/** @param {"starting" | "loading" | "ready" | "generating" | "error"} state */
function setState(state) {
  document.body.dataset.state = state;
  const ready = state === "ready";
  ui.prompt.disabled = !(ready || state === "generating");
  ui.send.disabled = !ready;
  ui.send.hidden = state === "generating";
  ui.stop.hidden = state !== "generating";
  ui.model.disabled = state === "generating" || state === "loading" || ui.model.options.length <= 2;
}

/** @returns {string} */
const state = () => document.body.dataset.state ?? "";

/** @param {number} n */
function formatBytes(n) {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MB`;
  return `${Math.round(n / 2 ** 10)} KB`;
}

/** @param {{phase: string, loaded: number, total: number, text: string}} p */
function onProgress(p) {
  if (p.phase === "download" || p.phase === "weights") {
    ui.loadBar.value = p.total > 0 ? p.loaded / p.total : 0;
    const verb = p.phase === "download" ? "Downloading weights" : "Loading weights onto the GPU";
    ui.loadText.textContent = `${verb}: ${formatBytes(p.loaded)} / ${formatBytes(p.total)}`;
  } else if (p.phase === "shaders") {
    ui.loadBar.value = p.loaded;
    ui.loadText.textContent = `Compiling GPU kernels: ${Math.round(p.loaded * 100)}%`;
  } else if (p.phase === "library") {
    ui.loadText.textContent = "Fetching the model library…";
  } else {
    ui.loadText.textContent = p.text;
  }
}

const ERROR_TITLES = {
  webgpu_unavailable: "WebGPU is not available",
  shader_f16_unsupported: "This GPU cannot run the f16 model",
  model_load_failed: "The model could not be loaded",
  integrity_check_failed: "A model file is damaged",
  context_length_exceeded: "The conversation is too long",
  device_lost: "The GPU was reset",
  model_not_found: "Unknown model",
};

/** @param {any} err */
function showError(err) {
  console.error(err);
  ui.errorTitle.textContent =
    ERROR_TITLES[/** @type {keyof typeof ERROR_TITLES} */ (err?.code)] ?? "Something went wrong";
  ui.errorMessage.textContent = err?.message ?? String(err);
  ui.errorTip.textContent = err?.code === "context_length_exceeded" ? "Start a new chat." : (err?.tip ?? "");
  ui.error.dataset.code = err?.code ?? "";
  ui.error.hidden = false;
}

function hideError() {
  ui.error.hidden = true;
}

/** @param {string} role @param {string} text */
function addMessage(role, text) {
  ui.empty.hidden = true;
  const el = document.createElement("div");
  el.className = `msg ${role}`;
  el.textContent = text;
  ui.log.append(el);
  ui.log.scrollTop = ui.log.scrollHeight;
  return el;
}

/** @param {Record<string, number> | undefined} extra @param {number} tokens */
function statsText(extra, tokens) {
  const parts = [`${tokens} tokens`];
  // A rate of 0 means "too fast to time" (coarse timers in workers): leave it out rather than print 0.
  if (extra?.decode_tokens_per_s) parts.push(`${extra.decode_tokens_per_s.toFixed(1)} tok/s`);
  if (extra?.prefill_tokens_per_s) parts.push(`prefill ${extra.prefill_tokens_per_s.toFixed(1)} tok/s`);
  if (extra?.time_to_first_token_s) parts.push(`first token ${extra.time_to_first_token_s.toFixed(2)} s`);
  return parts.join(" · ");
}

/** @param {string | null} model  a variant id, or null for the manifest's choice */
async function load(model) {
  setState("loading");
  hideError();
  ui.loadBar.value = 0;
  try {
    const options = { model, initProgressCallback: onProgress };
    if (app.engine) {
      app.info = await app.engine.reload(manifestUrl, options);
    } else {
      const worker = new Worker(new URL("../runtime/worker.js", import.meta.url), { type: "module" });
      app.engine = await CreateWebWorkerEngine(worker, manifestUrl, options);
      app.info = await app.engine.getModelInfo();
    }
    ui.stats.textContent = `${app.info.id} · loaded in ${app.info.load_seconds.toFixed(1)} s`;
    if (!model) ui.model.options[0].textContent = `Automatic: ${app.info.id}`;
    setState("ready");
    ui.prompt.focus();
  } catch (err) {
    setState("error");
    ui.loadText.textContent = "Not loaded.";
    showError(err);
  }
}

async function send() {
  const text = ui.prompt.value.trim();
  if (!text || !app.engine || state() !== "ready") return;
  hideError();
  ui.prompt.value = "";
  autosize();
  addMessage("user", text);
  app.messages.push({ role: "user", content: text });
  const bubble = addMessage("assistant", "");
  bubble.classList.add("pending");
  setState("generating");
  let reply = "";
  try {
    const stream = await app.engine.chat.completions.create({
      messages: app.messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    let finish = null;
    for await (const chunk of /** @type {AsyncIterable<any>} */ (stream)) {
      const choice = chunk.choices[0];
      if (choice?.delta?.content) {
        reply += choice.delta.content;
        bubble.textContent = reply;
        ui.log.scrollTop = ui.log.scrollHeight;
      }
      if (choice?.finish_reason) finish = choice.finish_reason;
      if (chunk.usage) {
        const meta = document.createElement("span");
        meta.className = "meta";
        meta.textContent =
          statsText(chunk.usage.extra, chunk.usage.completion_tokens) + (finish === "length" ? " · cut at length" : "");
        bubble.append(meta);
        ui.stats.textContent = statsText(chunk.usage.extra, chunk.usage.completion_tokens);
      }
    }
    app.messages.push({ role: "assistant", content: reply });
  } catch (err) {
    app.messages.pop(); // the failed turn is not part of the conversation
    if (!reply) bubble.remove();
    showError(err);
  } finally {
    bubble.classList.remove("pending");
    if (state() === "generating") setState("ready");
  }
}

function autosize() {
  ui.prompt.style.height = "auto";
  ui.prompt.style.height = `${Math.min(ui.prompt.scrollHeight, 180)}px`;
}

ui.form.addEventListener("submit", (/** @type {Event} */ ev) => {
  ev.preventDefault();
  send();
});
ui.prompt.addEventListener("keydown", (/** @type {KeyboardEvent} */ ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    send();
  }
});
ui.prompt.addEventListener("input", autosize);
ui.stop.addEventListener("click", () => app.engine?.interrupt());
ui.clear.addEventListener("click", () => {
  app.messages = [];
  ui.log.querySelectorAll(".msg").forEach((el) => el.remove());
  ui.empty.hidden = false;
  hideError();
});
ui.model.addEventListener("change", () => load(ui.model.value || null));

load(null);
