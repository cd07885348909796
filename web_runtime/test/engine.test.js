import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { fixture, ScriptedPipeline, HistoryPipeline, GpuSamplingPipeline } from "./helpers.js";
import { Engine, CreateMLCEngine } from "../src/engine.js";
import { TextTokenizer } from "../src/tokenizer.js";
import * as errors from "../src/errors.js";

const tokenizerJson = fixture("tokenizer.json");
const tokenizerConfig = fixture("tokenizer_config.json");
const tok = new TextTokenizer(tokenizerJson, tokenizerConfig);
const EOS = 2;
const SITE = "https://site.test/";
const manifest = {
  name: "tiny",
  format_version: 2,
  default_variant: "tiny-q4f16_1",
  variants: [
    {
      id: "tiny-q4f16_1",
      quantization: "q4f16_1",
      model_url: "models/tiny-q4f16_1/",
      model_lib: "libs/tiny-q4f16_1-webgpu.wasm",
      needs_shader_f16: true,
      context_window_size: 64,
    },
    {
      id: "tiny-q4f32_1",
      quantization: "q4f32_1",
      model_url: "models/tiny-q4f32_1/",
      model_lib: "libs/tiny-q4f32_1-webgpu.wasm",
      needs_shader_f16: false,
      context_window_size: 64,
    },
  ],
};
const chatConfig = {
  vocab_size: 400,
  temperature: 0,
  top_p: 1,
  eos_token_id: EOS,
  conv_template: { stop_str: ["<|im_end|>"], stop_token_ids: [EOS] },
};

globalThis.fetch = async (url) => {
  const u = String(url);
  const files = { [`${SITE}manifest.json`]: manifest };
  for (const m of manifest.variants) {
    files[`${SITE}${m.model_url}mlc-chat-config.json`] = chatConfig;
    files[`${SITE}${m.model_url}tokenizer.json`] = tokenizerJson;
    files[`${SITE}${m.model_url}tokenizer_config.json`] = tokenizerConfig;
  }
  return u in files ? new Response(JSON.stringify(files[u])) : new Response("missing", { status: 404 });
};

const REPLY = "Hello world! END more";
let pipeline;
let loadedRecord;
async function loadEngine({ script = [...tok.encode(REPLY), EOS], hasShaderF16 = false, model = null, pipe } = {}) {
  pipeline = pipe ?? new ScriptedPipeline(script, { after: EOS });
  const engine = new Engine({
    detectGpu: async () => ({ hasShaderF16, info: { vendor: "test" } }),
    loadPipeline: async ({ record, onProgress }) => {
      loadedRecord = record;
      onProgress({ phase: "weights", loaded: 10, total: 10, text: "done" });
      return pipeline;
    },
  });
  await engine.reload(`${SITE}manifest.json`, { model });
  return engine;
}
const user = (content) => ({ messages: [{ role: "user", content }] });

beforeEach(() => {
  loadedRecord = undefined;
});

test("reload picks the f32 variant when the adapter lacks shader-f16, with absolute URLs", async () => {
  const engine = await loadEngine();
  assert.equal(engine.getModelInfo().id, "tiny-q4f32_1");
  assert.equal(loadedRecord.model_url, `${SITE}models/tiny-q4f32_1/`);
  assert.equal(loadedRecord.model_lib, `${SITE}libs/tiny-q4f32_1-webgpu.wasm`);
  const f16 = await loadEngine({ hasShaderF16: true });
  assert.equal(f16.getModelInfo().id, "tiny-q4f16_1");
});

test("asking for the f16 variant without shader-f16 names the f32 variant", async () => {
  await assert.rejects(loadEngine({ model: "tiny-q4f16_1" }), (err) => {
    assert.ok(err instanceof errors.ShaderF16UnsupportedError);
    assert.match(err.message, /tiny-q4f32_1/);
    assert.equal(err.data.in_bundle, true);
    return true;
  });
  await assert.rejects(loadEngine({ model: "nope" }), errors.ModelNotFoundError);
});

test("a manifest of another format version is refused with a rebuild tip", async () => {
  const old = { ...manifest, format_version: 1 };
  const engine = new Engine({
    detectGpu: async () => ({ hasShaderF16: false, info: {} }),
    loadPipeline: async () => pipeline,
  });
  await assert.rejects(engine.reload(old, { baseUrl: SITE }), (err) => {
    assert.ok(err instanceof errors.ModelLoadError);
    assert.match(err.message, /format version 1; this runtime reads version 2/);
    assert.match(err.tip, /webbuild package/);
    return true;
  });
});

test("non-streaming chat: content until EOS, usage counts prompt and generated tokens", async () => {
  const engine = await loadEngine();
  const res = await engine.chat.completions.create(user("Hi"));
  const promptIds = tok.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  assert.equal(res.object, "chat.completion");
  assert.equal(res.model, "tiny-q4f32_1");
  assert.equal(res.choices[0].message.content, REPLY);
  assert.equal(res.choices[0].finish_reason, "stop");
  assert.equal(res.usage.prompt_tokens, promptIds.length);
  assert.equal(res.usage.completion_tokens, tok.encode(REPLY).length + 1);
  assert.deepEqual(pipeline.fed, [...promptIds, ...tok.encode(REPLY)]);
  for (const key of ["prefill_tokens_per_s", "decode_tokens_per_s", "time_to_first_token_s"]) {
    assert.equal(typeof res.usage.extra[key], "number", key);
  }
});

test("streaming chat: role chunk, content deltas, finish chunk, then the usage chunk", async () => {
  const engine = await loadEngine();
  const stream = await engine.chat.completions.create({
    ...user("Hi"),
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.deepEqual(chunks[0].choices[0].delta, { role: "assistant", content: "" });
  const middle = chunks.slice(1, -2);
  assert.ok(middle.length > 1);
  assert.equal(middle.map((c) => c.choices[0].delta.content).join(""), REPLY);
  assert.ok(middle.every((c) => c.choices[0].finish_reason === null && c.usage === null));
  assert.equal(chunks.at(-2).choices[0].finish_reason, "stop");
  assert.deepEqual(chunks.at(-2).choices[0].delta, {});
  assert.deepEqual(chunks.at(-1).choices, []);
  assert.equal(chunks.at(-1).usage.completion_tokens, tok.encode(REPLY).length + 1);
  assert.ok(new Set(chunks.map((c) => c.id)).size === 1 && chunks.every((c) => c.object === "chat.completion.chunk"));
});

test("a stop string spanning tokens ends the reply and is not emitted", async () => {
  const engine = await loadEngine();
  const stream = await engine.chat.completions.create({ ...user("Hi"), stream: true, stop: ["D mo"] });
  let text = "";
  let finish;
  for await (const c of stream) {
    text += c.choices[0].delta.content ?? "";
    finish = c.choices[0].finish_reason ?? finish;
  }
  assert.equal(text, "Hello world! EN");
  assert.equal(finish, "stop");
});

test("max_tokens ends with finish_reason length", async () => {
  const engine = await loadEngine();
  const res = await engine.chat.completions.create({ ...user("Hi"), max_tokens: 2 });
  assert.equal(res.choices[0].finish_reason, "length");
  assert.equal(res.usage.completion_tokens, 2);
  assert.equal(res.choices[0].message.content, tok.decode(tok.encode(REPLY).slice(0, 2)));
});

test("a prompt that does not fit the context window is refused before generating", async () => {
  const engine = await loadEngine();
  await assert.rejects(
    engine.chat.completions.create(user("Hello world! ".repeat(30))),
    errors.ContextLengthExceededError,
  );
  await assert.rejects(
    engine.chat.completions.create({ ...user("Hi"), max_tokens: 60 }),
    (err) => err.code === "context_length_exceeded",
  );
  await assert.rejects(
    engine.chat.completions.create({ ...user("Hi"), stream: true, max_tokens: 60 }),
    errors.ContextLengthExceededError,
  );
  await assert.rejects(engine.completions.create({ prompt: "x", logit_bias: { 400: 1 } }), (err) => {
    assert.ok(err instanceof errors.InvalidRequestError);
    assert.equal(err.param, "logit_bias");
    return true;
  });
});

test("an omitted max_tokens is what the context window leaves (16 at most for completions)", async () => {
  const engine = await loadEngine({ pipe: new ScriptedPipeline([], { after: 7, contextWindowSize: 20 }) });
  const prompt = Array.from({ length: 17 }, (_, i) => i + 5);
  const completion = await engine.completions.create({ prompt });
  assert.equal(completion.usage.completion_tokens, 3);
  assert.equal(completion.choices[0].finish_reason, "length");
  assert.equal((await engine.completions.create({ prompt: [5] })).usage.completion_tokens, 16);
  await assert.rejects(engine.completions.create({ prompt, max_tokens: 4 }), (err) => {
    assert.equal(err.code, "context_length_exceeded");
    assert.equal(err.param, "max_tokens");
    return true;
  });
  const chat = await engine.chat.completions.create({ ...user("") });
  assert.equal(chat.usage.prompt_tokens + chat.usage.completion_tokens, 20);
});

test("text completion: raw prompt, default 16 tokens, echo", async () => {
  const engine = await loadEngine({
    script: tok.encode(" world! END more and more and more and more and more"),
    pipe: undefined,
  });
  const res = await engine.completions.create({ prompt: "Hello", echo: true });
  assert.equal(res.object, "text_completion");
  assert.equal(res.usage.completion_tokens, 16);
  assert.equal(res.choices[0].finish_reason, "length");
  assert.ok(res.choices[0].text.startsWith("Hello world!"));
  const stream = await engine.completions.create({ prompt: [282], max_tokens: 3, stream: true });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.equal(chunks.at(-1).choices[0].finish_reason, "length");
  assert.ok(chunks.every((c) => c.object === "text_completion"));
});

test("the same seed gives the same sampled reply", async () => {
  class NoisyPipeline extends ScriptedPipeline {
    next() {
      const l = new Float32Array(this.vocab);
      for (let i = 0; i < l.length; i++) l[i] = Math.sin(i * 12.9898 + this.step * 78.233) * 2;
      this.step++;
      return l;
    }
  }
  const engine = await loadEngine({ pipe: new NoisyPipeline([]) });
  const ask = (seed) => engine.chat.completions.create({ ...user("Hi"), temperature: 1, seed, max_tokens: 12 });
  const [a, b, c] = [await ask(7), await ask(7), await ask(8)];
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
  assert.notEqual(a.choices[0].message.content, c.choices[0].message.content);
});

test("interrupt() ends the running generation with finish_reason abort", async () => {
  class SlowPipeline extends ScriptedPipeline {
    async decode(id) {
      await new Promise((r) => setTimeout(r, 2));
      return super.decode(id);
    }
  }
  const engine = await loadEngine({
    pipe: new SlowPipeline(tok.encode(" more".repeat(40)), { contextWindowSize: 64 }),
  });
  const stream = await engine.chat.completions.create({ ...user("Hi"), stream: true });
  let finish;
  let n = 0;
  for await (const c of stream) {
    if (++n === 3) engine.interrupt();
    finish = c.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(finish, "abort");
  assert.ok(n < 20);
});

test("forwardTokens returns the logits after the prompt and after each decoded token", async () => {
  const engine = await loadEngine({ script: [5, 6, 7] });
  const out = await engine.forwardTokens([10, 11, 12], [20, 21]);
  assert.equal(out.length, 3);
  assert.deepEqual(
    out.map((l) => l.indexOf(10)),
    [5, 6, 7],
  );
  assert.deepEqual(pipeline.fed, [10, 11, 12, 20, 21]);
  await assert.rejects(engine.forwardTokens([]), errors.InvalidRequestError);
  await assert.rejects(
    engine.forwardTokens([1, 400]),
    (err) => err.code === "invalid_request" && /400/.test(err.message),
  );
  await assert.rejects(engine.completions.create({ prompt: [5, 9999] }), (err) => err.param === "prompt");
  assert.ok(engine.getModelInfo(), "a bad request does not unload the model");
});

test("requests before reload, or naming another model, are refused with typed errors", async () => {
  const fresh = new Engine({ detectGpu: async () => ({}), loadPipeline: async () => ({}) });
  await assert.rejects(fresh.chat.completions.create(user("Hi")), errors.ModelNotLoadedError);
  const engine = await loadEngine();
  await assert.rejects(engine.chat.completions.create({ ...user("Hi"), model: "other" }), errors.ModelNotFoundError);
  await assert.rejects(engine.chat.completions.create({ ...user("Hi"), temperature: 9 }), errors.InvalidRequestError);
});

test("a runtime failure drops the model so the next call asks for a reload", async () => {
  class BrokenPipeline extends ScriptedPipeline {
    async decode() {
      throw new Error("[TVM] Check failed: kv cache");
    }
  }
  const engine = await loadEngine({ pipe: new BrokenPipeline(tok.encode(REPLY)) });
  await assert.rejects(engine.chat.completions.create(user("Hi")), (err) => {
    assert.equal(err.constructor, errors.WebbuildError);
    assert.match(err.message, /Check failed/);
    return true;
  });
  assert.ok(pipeline.disposed);
  await assert.rejects(engine.chat.completions.create(user("Hi")), errors.ModelNotLoadedError);
});

test("requests run one at a time, in order", async () => {
  const engine = await loadEngine();
  const results = await Promise.all(
    [1, 2, 3].map(() => engine.chat.completions.create({ ...user("Hi"), max_tokens: 3 })),
  );
  assert.ok(results.every((r) => r.choices[0].message.content === tok.decode(tok.encode(REPLY).slice(0, 3))));
  assert.equal(pipeline.resets, 3); // each request starts from an empty KV cache
});

/** A pipeline whose logits at position i favour token (ids[i] + 1) % vocab; verify works in chunks of 3. */
class CountingPipeline extends ScriptedPipeline {
  constructor() {
    super([], { vocab: 400 });
    this.chunks = [];
  }
  async verify(ids, onChunk) {
    for (let start = 0; start < ids.length; start += 3) {
      const chunk = ids.slice(start, start + 3);
      this.chunks.push(chunk.length);
      const logits = new Float32Array(chunk.length * this.vocab);
      chunk.forEach((id, r) => logits.set(this.logitsFor((id + 1) % this.vocab), r * this.vocab));
      onChunk(logits, start, chunk.length);
    }
  }
}

test("scoreTokens scores every position in one pass per chunk, from an empty KV cache", async () => {
  const engine = await loadEngine({ pipe: new CountingPipeline() });
  const ids = [10, 11, 50, 12, 13, 399, 7];
  const scores = await engine.scoreTokens(ids, { topK: 2 });
  assert.equal(scores.positions, 7);
  assert.equal(scores.vocabSize, 400);
  assert.deepEqual(pipeline.chunks, [3, 3, 1]);
  assert.ok(pipeline.resets >= 1);
  const top1 = ids.map((_, i) => scores.topIds[i * 2]);
  assert.deepEqual(top1, [11, 12, 51, 13, 14, 0, 8]);
  // Token 11 follows 10 and is the favourite: nearly all the probability mass.
  assert.ok(scores.nextLogprobs[0] > -1e-3 && scores.nextLogprobs[0] <= 0);
  assert.ok(scores.nextLogprobs[1] < -10); // 50 follows 11, which expected 12
  assert.equal(scores.logits, null);
  const full = await engine.scoreTokens(ids.slice(0, 2), { fullLogits: true });
  assert.equal(full.logits.length, 2 * 400);
  assert.equal(full.logits[11], 10);
});

test("scoreTokens refuses bad input with typed errors and keeps the model", async () => {
  const engine = await loadEngine({ pipe: new CountingPipeline() });
  await assert.rejects(engine.scoreTokens([]), errors.InvalidRequestError);
  await assert.rejects(engine.scoreTokens([1, 400]), (err) => err.param === "tokenIds");
  await assert.rejects(engine.scoreTokens([1], { topK: 0 }), (err) => err.param === "topK");
  await assert.rejects(engine.scoreTokens(new Array(65).fill(1)), errors.ContextLengthExceededError);
  assert.ok(engine.getModelInfo());
  const plain = await loadEngine(); // a pipeline without verify
  await assert.rejects(plain.scoreTokens([1, 2]), /cannot score/);
});

// ---- logprobs and n choices ------------------------------------------------------------------------

const drain = async (stream) => {
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  return chunks;
};
/** ScriptedPipeline's logits: 10 for the scripted token, -10 for the other 399. */
const SCRIPTED_LSE = Math.log(Math.exp(10) + 399 * Math.exp(-10));

test("chat logprobs: an entry per token of the content (none for EOS), the log-softmax of the logits", async () => {
  const engine = await loadEngine();
  const res = await engine.chat.completions.create({ ...user("Hi"), logprobs: true, top_logprobs: 3 });
  const ids = tok.encode(REPLY);
  const { content } = res.choices[0].logprobs;
  assert.equal(res.usage.completion_tokens, ids.length + 1); // EOS counts as a token, has no entry
  assert.equal(content.length, ids.length);
  assert.equal(content.map((e) => e.token).join(""), REPLY);
  content.forEach((e, i) => {
    assert.equal(e.token, tok.decode([ids[i]]));
    assert.deepEqual(e.bytes, [...Buffer.from(e.token, "utf8")]);
    assert.ok(Math.abs(e.logprob - (10 - SCRIPTED_LSE)) < 1e-9);
    assert.equal(e.top_logprobs.length, 3);
    assert.deepEqual(e.top_logprobs[0], { token: e.token, logprob: e.logprob, bytes: e.bytes });
    // The runners-up tie at -10; the lowest ids win, special tokens by name.
    assert.equal(e.top_logprobs[1].token, ids[i] === 0 ? "<|im_start|>" : "<|endoftext|>");
    assert.ok(Math.abs(e.top_logprobs[1].logprob - (-10 - SCRIPTED_LSE)) < 1e-9);
  });
  const plain = await engine.chat.completions.create(user("Hi"));
  assert.equal(plain.choices[0].logprobs, null);
  const noTop = await engine.chat.completions.create({ ...user("Hi"), logprobs: true });
  assert.ok(noTop.choices[0].logprobs.content.every((e) => e.top_logprobs.length === 0));
});

test("logprobs include logit_bias, not the temperature", async () => {
  const engine = await loadEngine();
  const ask = (extra) => engine.chat.completions.create({ ...user("Hi"), logprobs: true, top_logprobs: 2, ...extra });
  const greedy = (await ask({ temperature: 0 })).choices[0].logprobs;
  const warm = (await ask({ temperature: 1.5, top_p: 0.5, seed: 3 })).choices[0].logprobs;
  assert.deepEqual(warm, greedy);
  const biased = (await ask({ temperature: 0, logit_bias: { 0: 5 } })).choices[0].logprobs.content[0];
  const lse = Math.log(Math.exp(10) + Math.exp(-5) + 398 * Math.exp(-10));
  assert.ok(Math.abs(biased.logprob - (10 - lse)) < 1e-9);
  assert.equal(biased.top_logprobs[1].token, "<|endoftext|>");
  assert.ok(Math.abs(biased.top_logprobs[1].logprob - (-5 - lse)) < 1e-9);
});

test("streamed logprobs ride with the delta that completes their token's text", async () => {
  const engine = await loadEngine();
  const request = { ...user("Hi"), stream: true, logprobs: true, stop: ["END!"] };
  const chunks = await drain(await engine.chat.completions.create(request));
  const content = chunks.filter((c) => c.choices[0].delta.content !== undefined && !c.choices[0].delta.role);
  assert.ok(content.every((c) => c.choices[0].logprobs !== null));
  assert.equal(chunks[0].choices[0].logprobs, null);
  assert.equal(chunks.at(-1).choices[0].logprobs, null);
  const pieces = content.map((c) => [c.choices[0].delta.content, c.choices[0].logprobs.content.map((e) => e.token)]);
  // "END!" might start at " EN": "EN" waits, then comes out with "D " once the stop string cannot match.
  const at = pieces.findIndex((p) => p[0] === " ");
  assert.deepEqual(pieces.slice(at, at + 2), [
    [" ", []],
    ["END ", [" EN", "D", " "]],
  ]);
  assert.equal(pieces.map((p) => p[0]).join(""), REPLY);
  const tokens = pieces.flatMap((p) => p[1]);
  const whole = await engine.chat.completions.create({ ...request, stream: false });
  assert.deepEqual(
    whole.choices[0].logprobs.content.map((e) => e.token),
    tokens,
  );
});

test("tokens held back for a stop string get no entry; one the stop string cuts through keeps its", async () => {
  const engine = await loadEngine();
  const tokens = async (stop, stream) => {
    const request = { ...user("Hi"), logprobs: true, stop: [stop] };
    if (!stream) return (await engine.chat.completions.create(request)).choices[0].logprobs.content.map((e) => e.token);
    const chunks = await drain(await engine.chat.completions.create({ ...request, stream: true }));
    return chunks.flatMap((c) => c.choices[0].logprobs?.content.map((e) => e.token) ?? []);
  };
  for (const stream of [false, true]) {
    assert.deepEqual(await tokens("D mo", stream), ["Hello", " wor", "ld", "!", " EN"]);
    assert.deepEqual(await tokens("N", stream), ["Hello", " wor", "ld", "!", " EN"]); // " E" of " EN" is output
    assert.deepEqual(await tokens("Hello", stream), []);
  }
});

test("completion logprobs: tokens, token_logprobs, top_logprobs, text_offset", async () => {
  const text = " café 東京";
  const engine = await loadEngine({ script: [...tok.encode(text), EOS] });
  const res = await engine.completions.create({ prompt: "x", logprobs: 2, max_tokens: 10 });
  const lp = res.choices[0].logprobs;
  assert.equal(res.choices[0].text, text);
  // " 東京" is three byte tokens: decoded alone they are replacement characters; all start where it does.
  assert.deepEqual(lp.tokens, [" c", "af", "é", " \uFFFD", "\uFFFD\uFFFD", "\uFFFD\uFFFD"]);
  assert.deepEqual(lp.text_offset, [0, 2, 4, 5, 5, 5]);
  assert.ok(lp.token_logprobs.every((v) => Math.abs(v - (10 - SCRIPTED_LSE)) < 1e-9));
  assert.ok(
    lp.top_logprobs.every((top, i) => Object.keys(top).length === 2 && top[lp.tokens[i]] === lp.token_logprobs[i]),
  );
  const chunks = await drain(
    await engine.completions.create({ prompt: "x", logprobs: 0, max_tokens: 10, stream: true }),
  );
  const carried = chunks
    .filter((c) => c.choices[0].logprobs)
    .map((c) => [c.choices[0].text, c.choices[0].logprobs.tokens.length, c.choices[0].logprobs.text_offset]);
  assert.deepEqual(carried.at(-1), [" 東京", 3, [5, 5, 5]]);
  assert.ok(
    chunks
      .filter((c) => c.choices[0].logprobs)
      .every((c) => c.choices[0].logprobs.top_logprobs.every((t) => Object.keys(t).length === 0)),
  );
});

test("n choices without popN: each prefills the prompt again; usage counts the prompt once", async () => {
  const engine = await loadEngine();
  const res = await engine.chat.completions.create({ ...user("Hi"), n: 3 });
  const promptIds = tok.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  assert.deepEqual(
    res.choices.map((c) => [c.index, c.message.content, c.finish_reason]),
    [0, 1, 2].map((i) => [i, REPLY, "stop"]),
  );
  assert.equal(res.usage.prompt_tokens, promptIds.length);
  assert.equal(res.usage.completion_tokens, 3 * (tok.encode(REPLY).length + 1));
  assert.equal(res.usage.total_tokens, res.usage.prompt_tokens + res.usage.completion_tokens);
  assert.equal(pipeline.resets, 3);
});

test("n choices with popN reuse the prompt's KV cache and agree with re-prefilling", async () => {
  const request = { ...user("Hi"), n: 3, max_tokens: 8, logprobs: true, top_logprobs: 2, logit_bias: { 7: 3 } };
  const popping = await loadEngine({ pipe: new HistoryPipeline() });
  const popped = await popping.chat.completions.create(request);
  const pops = pipeline.pops;
  assert.equal(pipeline.prefills, 1);
  const prefilling = await loadEngine({ pipe: new HistoryPipeline({ popN: false }) });
  const again = await prefilling.chat.completions.create(request);
  assert.equal(pipeline.prefills, 3);
  assert.deepEqual(
    popped.choices.map((c) => c.logprobs),
    again.choices.map((c) => c.logprobs),
  );
  assert.deepEqual(popped.choices, again.choices);
  // Greedy: identical choices, the same as n = 1 (bias applied once per choice, to a copy of the logits).
  const single = await prefilling.chat.completions.create({ ...request, n: 1 });
  assert.ok(popped.choices.every((c) => c.message.content === single.choices[0].message.content));
  assert.deepEqual(popped.choices[2].logprobs, single.choices[0].logprobs);
  const length = popped.usage.completion_tokens / 3;
  assert.deepEqual(pops, [length - 1, length - 1]); // every token but the last went through decode
});

test("tokens chosen on the GPU are the CPU sampler's: same seed, same draws, bias and penalties", async () => {
  const requests = [
    { ...user("Hi"), max_tokens: 10, temperature: 0, logit_bias: { 9: 2.5 } },
    { ...user("Hi"), max_tokens: 12, temperature: 1, seed: 11, presence_penalty: 0.5, frequency_penalty: 0.25 },
    { ...user("Hi"), max_tokens: 12, temperature: 0.7, seed: 3, n: 3 },
  ];
  for (const request of requests) {
    const cpu = await (await loadEngine({ pipe: new HistoryPipeline() })).chat.completions.create(request);
    const gpuEngine = await loadEngine({ pipe: new GpuSamplingPipeline() });
    const gpu = await gpuEngine.chat.completions.create(request);
    assert.ok(pipeline.gpuChoices > 0, JSON.stringify(request));
    assert.deepEqual(
      gpu.choices.map((c) => c.message.content),
      cpu.choices.map((c) => c.message.content),
    );
    assert.equal(gpu.usage.completion_tokens, cpu.usage.completion_tokens);
  }
});

test("greedy and seeded steps are sent before the token before them is read; the cache ends as without", async () => {
  const run = async (pipe, request) => {
    const engine = await loadEngine({ pipe });
    const out = await engine.chat.completions.create(request);
    const text = out.choices[0].message.content;
    // the next turn reuses what the cache holds: as much after chained steps as after the CPU's
    const prefilled = pipe.prefilled.length;
    await engine.chat.completions.create({
      messages: [...request.messages, { role: "assistant", content: text }, { role: "user", content: "More" }],
      max_tokens: 2,
    });
    return { text, fed: [...pipe.fed], next: pipe.prefilled.slice(prefilled), pops: pipe.pops };
  };
  const greedy = { ...user("Hi"), max_tokens: 12, temperature: 0 };
  const cpu = await run(new HistoryPipeline(), greedy);
  const gpu = await run(new GpuSamplingPipeline(), greedy);
  assert.equal(pipeline.chainedSteps, 11 + 1, "every decode step of both requests but the second's first");
  assert.deepEqual(gpu, cpu);
  // a stop string ends the reply at a token whose step was already sent: that step is taken back (popN(1))
  const stop = cpu.text.slice(4, 7);
  const stopped = { ...greedy, stop: [stop] };
  const cpuStopped = await run(new HistoryPipeline(), stopped);
  const gpuStopped = await run(new GpuSamplingPipeline(), stopped);
  assert.equal(gpuStopped.text, cpu.text.slice(0, 4));
  assert.equal(gpuStopped.text, cpuStopped.text);
  assert.deepEqual(gpuStopped.next, cpuStopped.next);
  assert.equal(gpuStopped.pops.filter((n) => n === 1).length, cpuStopped.pops.filter((n) => n === 1).length + 1);
});

test("penalties and grammars, which depend on the token before, wait for it", async () => {
  const engine = await loadEngine({ pipe: new GpuSamplingPipeline(WIDE) });
  await engine.chat.completions.create({ ...user("Hi"), max_tokens: 8, presence_penalty: 1 });
  await engine.chat.completions.create({ ...user("Hi"), max_tokens: 8, response_format: { type: "json_object" } });
  assert.ok(pipeline.gpuChoices > 8);
  assert.equal(pipeline.chainedSteps, 0);
});

test("requests with logprobs or top_p < 1 sample on the CPU", async () => {
  for (const extra of [{ logprobs: true }, { temperature: 1, top_p: 0.5, seed: 1 }]) {
    const engine = await loadEngine({ pipe: new GpuSamplingPipeline() });
    await engine.chat.completions.create({ ...user("Hi"), max_tokens: 6, ...extra });
    assert.equal(pipeline.gpuChoices, 0, JSON.stringify(extra));
  }
});

test("with a seed, n sampled choices differ from each other and repeat across requests", async () => {
  const request = { ...user("Hi"), n: 4, max_tokens: 10, temperature: 1, seed: 7 };
  const engine = await loadEngine({ pipe: new HistoryPipeline({ scale: 1 }) });
  const texts = async (extra = {}) =>
    (await engine.chat.completions.create({ ...request, ...extra })).choices.map((c) => c.message.content);
  const first = await texts();
  assert.equal(new Set(first).size, 4);
  assert.deepEqual(await texts(), first);
  assert.deepEqual(await texts({ n: 1 }), first.slice(0, 1)); // choice 0 samples as n = 1 does
  assert.notDeepEqual(await texts({ seed: 8 }), first);
  const other = await loadEngine({ pipe: new HistoryPipeline({ scale: 1, popN: false }) });
  const res = await other.chat.completions.create(request);
  assert.deepEqual(
    res.choices.map((c) => c.message.content),
    first,
  );
});

test("streaming n choices: per index a role chunk, deltas with logprobs, a finish; usage last", async () => {
  const engine = await loadEngine();
  const request = { ...user("Hi"), n: 2, stream: true, stream_options: { include_usage: true }, logprobs: true };
  const chunks = await drain(await engine.chat.completions.create(request));
  const usage = chunks.pop();
  assert.deepEqual(usage.choices, []);
  assert.equal(usage.usage.completion_tokens, 2 * (tok.encode(REPLY).length + 1));
  assert.ok(chunks.every((c) => c.choices.length === 1 && c.usage === null));
  for (const index of [0, 1]) {
    const mine = chunks.filter((c) => c.choices[0].index === index).map((c) => c.choices[0]);
    assert.deepEqual(mine[0].delta, { role: "assistant", content: "" });
    assert.deepEqual(mine.at(-1).delta, {});
    assert.equal(mine.at(-1).finish_reason, "stop");
    const middle = mine.slice(1, -1);
    assert.ok(middle.every((c) => c.finish_reason === null && c.logprobs.content.length > 0));
    assert.equal(middle.map((c) => c.delta.content).join(""), REPLY);
    assert.equal(middle.flatMap((c) => c.logprobs.content.map((e) => e.token)).join(""), REPLY);
  }
  // Choices come one after another.
  const order = chunks.map((c) => c.choices[0].index);
  assert.deepEqual(order, [...order].sort());

  const echoed = await drain(
    await engine.completions.create({ prompt: "Hi", echo: true, n: 2, max_tokens: 2, stream: true }),
  );
  assert.deepEqual(
    echoed.map((c) => [c.choices[0].index, c.choices[0].text, c.choices[0].finish_reason]),
    [0, 1].flatMap((i) => [
      [i, "Hi", null],
      [i, "Hello", null],
      [i, " wor", null],
      [i, "", "length"],
    ]),
  );
  const completion = await drain(
    await engine.completions.create({ prompt: "Hi", n: 2, max_tokens: 2, stream: true, logprobs: 1 }),
  );
  const offsets = completion.filter((c) => c.choices[0].logprobs).map((c) => c.choices[0].logprobs.text_offset);
  assert.deepEqual(offsets, [[0], [5], [0], [5]]); // "Hello" + " wor", twice
});

test("interrupt() stops every choice of the request", async () => {
  class SlowPipeline extends ScriptedPipeline {
    async decode(id) {
      await new Promise((r) => setTimeout(r, 2));
      return super.decode(id);
    }
  }
  const engine = await loadEngine({ pipe: new SlowPipeline(tok.encode(" more".repeat(40))) });
  const stream = await engine.chat.completions.create({ ...user("Hi"), n: 3, stream: true });
  const finishes = [];
  let n = 0;
  for await (const c of stream) {
    if (++n === 3) engine.interrupt();
    if (c.choices[0].finish_reason) finishes.push([c.choices[0].index, c.choices[0].finish_reason]);
  }
  assert.deepEqual(finishes, [
    [0, "abort"],
    [1, "abort"],
    [2, "abort"],
  ]);
  assert.ok(n < 15);
  assert.equal(pipeline.resets, 1, "choices after the interrupt do not touch the model");
  const res = await engine.chat.completions.create({ ...user("Hi"), n: 2, max_tokens: 2 });
  assert.deepEqual(
    res.choices.map((c) => c.finish_reason),
    ["length", "length"],
  );
});

test("an aborted signal ends the whole request and frees the engine", async () => {
  const engine = await loadEngine();
  const controller = new AbortController();
  const stream = await engine.chatCompletion({ ...user("Hi"), n: 3, stream: true }, { signal: controller.signal });
  const seen = [];
  await assert.rejects(async () => {
    for await (const c of stream) {
      seen.push(c.choices[0].index);
      if (seen.length === 3) controller.abort();
    }
  }, errors.AbortError);
  assert.ok(seen.every((i) => i === 0));
  const res = await engine.chat.completions.create({ ...user("Hi"), n: 2 });
  assert.equal(res.choices.length, 2);
});

// ---- multi-turn KV reuse ----------------------------------------------------------------------------

/** Tokens of `a` and `b` in common from the start, at most b.length - 1 (one token is always prefilled). */
const commonPrefix = (a, b) => {
  let n = 0;
  while (n < Math.min(a.length, b.length - 1) && a[n] === b[n]) n++;
  return n;
};
const history = () => new HistoryPipeline({ contextWindowSize: 512 });
const turn1 = { messages: [{ role: "user", content: "Hi there" }], max_tokens: 6, temperature: 0 };
/** Turn 2: turn 1, its reply, and a new question. */
const turn2 = (reply) => ({
  ...turn1,
  messages: [...turn1.messages, { role: "assistant", content: reply }, { role: "user", content: "And then?" }],
});

test("a chat's second turn prefills only its new tokens and replies as a cold engine does", async () => {
  const engine = await loadEngine({ pipe: history() });
  const first = await engine.chat.completions.create(turn1);
  assert.deepEqual(first.usage.prompt_tokens_details, { cached_tokens: 0 });
  const inCache = [...pipeline.fed];
  const warm = pipeline;
  const request = turn2(first.choices[0].message.content);
  const second = await engine.chat.completions.create(request);
  const promptIds = tok.encode(engine.applyChatTemplate(request.messages, { addGenerationPrompt: true }));
  const cached = commonPrefix(inCache, promptIds);
  assert.ok(cached >= first.usage.prompt_tokens, `${cached} of ${promptIds.length}`);
  assert.deepEqual(second.usage.prompt_tokens_details, { cached_tokens: cached });
  assert.equal(second.usage.prompt_tokens, promptIds.length);
  assert.equal(warm.prefilled.at(-1), promptIds.length - cached);
  assert.equal(second.usage.extra.cached_tokens, cached);
  assert.equal(second.usage.extra.prefill_tokens, promptIds.length - cached);
  assert.deepEqual(engine.runtimeStats(), second.usage.extra);

  const fresh = await loadEngine({ pipe: history() });
  const coldReply = await fresh.chat.completions.create(request);
  assert.equal(coldReply.usage.prompt_tokens_details.cached_tokens, 0);
  assert.equal(pipeline.prefilled.at(-1), promptIds.length);
  assert.deepEqual(stripIds(second), stripIds(coldReply));
});

/** A response without what differs between runs: ids, times, timings and the cache figures. */
const stripIds = (res) => ({ choices: res.choices, completion_tokens: res.usage.completion_tokens });

test("a new conversation keeps only the prefix it shares with the cache and replies as a cold engine", async () => {
  const engine = await loadEngine({ pipe: history() });
  await engine.chat.completions.create(turn1);
  const other = { ...turn1, messages: [{ role: "user", content: "Something else entirely" }] };
  const res = await engine.chat.completions.create(other);
  // "<|im_start|>user\n" is all the two prompts share.
  assert.equal(res.usage.prompt_tokens_details.cached_tokens, tok.encode("<|im_start|>user\n").length);
  const cold = await (await loadEngine({ pipe: history() })).chat.completions.create(other);
  assert.deepEqual(stripIds(res), stripIds(cold));
});

test("n choices, sampled or greedy, after a turn: the same as a cold engine's", async () => {
  for (const extra of [{ n: 3 }, { n: 3, temperature: 0.9, seed: 5, logprobs: true }]) {
    for (const popN of [true, false]) {
      const make = () => new HistoryPipeline({ contextWindowSize: 512, popN });
      const engine = await loadEngine({ pipe: make() });
      const first = await engine.chat.completions.create({ ...turn1, ...extra });
      const request = { ...turn2(first.choices[1].message.content), ...extra };
      const warm = await engine.chat.completions.create(request);
      // Without popN only an exact extension is reused: the cache holds the last choice, not choice 1.
      if (popN) assert.ok(warm.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens);
      const cold = await (await loadEngine({ pipe: make() })).chat.completions.create(request);
      assert.deepEqual(stripIds(warm), stripIds(cold), JSON.stringify({ extra, popN }));
    }
  }
});

test("scoring, forwardTokens and resetChat leave the next request to start from an empty cache", async () => {
  class ScoringPipeline extends HistoryPipeline {
    async verify(ids, onChunk) {
      this.fed.push(...ids);
      onChunk(new Float32Array(ids.length * this.vocab), 0, ids.length);
    }
  }
  const engine = await loadEngine({ pipe: new ScoringPipeline({ contextWindowSize: 512 }) });
  const first = await engine.chat.completions.create(turn1);
  const request = turn2(first.choices[0].message.content);
  const promptIds = tok.encode(engine.applyChatTemplate(request.messages, { addGenerationPrompt: true }));
  for (const between of [
    () => engine.scoreTokens(promptIds.slice(0, 5)),
    () => engine.forwardTokens(promptIds.slice(0, 5)),
    () => engine.resetChat(),
  ]) {
    await engine.chat.completions.create(turn1);
    await between();
    const res = await engine.chat.completions.create(request);
    assert.equal(res.usage.prompt_tokens_details.cached_tokens, 0, String(between));
    assert.equal(pipeline.prefilled.at(-1), promptIds.length);
  }
});

test("text completions reuse the cache too, and report the cached tokens", async () => {
  const engine = await loadEngine({ pipe: history() });
  await engine.completions.create({ prompt: [5, 6, 7, 8], max_tokens: 1 });
  const res = await engine.completions.create({ prompt: [5, 6, 7, 8, 9, 10], max_tokens: 3 });
  assert.deepEqual(res.usage.prompt_tokens_details, { cached_tokens: 4 });
  const cold = await (await loadEngine({ pipe: history() })).completions.create({
    prompt: [5, 6, 7, 8, 9, 10],
    max_tokens: 3,
  });
  assert.deepEqual(stripIds(res), stripIds(cold));
});

// ---- WebLLM's MLCEngine names ----------------------------------------------------------------------------

test("reload(variantId) loads that variant of the last manifest; reload() the last model again", async () => {
  const engine = await loadEngine({ hasShaderF16: true });
  assert.equal(engine.getModelInfo().id, "tiny-q4f16_1");
  assert.equal((await engine.reload("tiny-q4f32_1")).id, "tiny-q4f32_1");
  assert.equal(loadedRecord.model_url, `${SITE}models/tiny-q4f32_1/`);
  await engine.unload();
  assert.equal((await engine.reload()).id, "tiny-q4f32_1");
  // Not a variant id: a manifest URL, which is not there.
  await assert.rejects(engine.reload("tiny-q9", { baseUrl: SITE }), errors.ModelLoadError);
  await assert.rejects(new Engine().reload(), (err) => {
    assert.ok(err instanceof errors.InvalidRequestError);
    assert.match(err.tip, /manifest\.json URL/);
    return true;
  });
});

test("runtimeStatsText, getMessage, interruptGenerate and resetChat(keepStats) behave as WebLLM's", async () => {
  class SlowPipeline extends HistoryPipeline {
    async decode(id) {
      await new Promise((r) => setTimeout(r, 2));
      return super.decode(id);
    }
  }
  const engine = await loadEngine({ pipe: new SlowPipeline({ contextWindowSize: 512 }) });
  assert.equal(await engine.runtimeStatsText(), "prefill: 0.0000 tokens/sec, decoding: 0.0000 tokens/sec");
  const res = await engine.chat.completions.create({ ...turn1, max_tokens: 8 });
  assert.equal(await engine.getMessage(), res.choices[0].message.content);
  const { prefill_tokens_per_s: p, decode_tokens_per_s: d } = engine.runtimeStats();
  assert.equal(await engine.runtimeStatsText(), `prefill: ${p.toFixed(4)} tokens/sec, decoding: ${d.toFixed(4)} tokens/sec`);
  assert.ok(p > 0 && d > 0);

  const stream = await engine.chat.completions.create({ ...turn1, max_tokens: 40, stream: true });
  let text = "";
  let finish;
  for await (const c of stream) {
    const piece = c.choices[0]?.delta.content;
    if (piece) {
      text += piece;
      assert.equal(await engine.getMessage(), text); // the reply so far, while it streams
      engine.interruptGenerate();
    }
    finish = c.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(finish, "abort");

  assert.ok(text.length > 0);
  await engine.resetChat(true);
  assert.ok(Object.keys(engine.runtimeStats()).length > 0);
  assert.equal(await engine.getMessage(), "");
  await engine.resetChat();
  assert.deepEqual(engine.runtimeStats(), {});
});

// WebLLM's appConfig for the site's two variants, as a WebLLM user writes it (README's WebLLM section).
const appConfig = {
  model_list: manifest.variants.map((v) => ({
    model: `${SITE}${v.model_url}#/resolve/main/`,
    model_id: v.id,
    model_lib: `${SITE}${v.model_lib}`,
    ...(v.needs_shader_f16 ? { required_features: ["shader-f16"] } : {}),
  })),
};

/**
 * CreateMLCEngine makes its own Engine: while `t` runs, every Engine loads on the fake GPU (with shader-f16)
 * and a scripted pipeline that reports `progress` first. Returns the mock of reload (its `calls`).
 */
function fakeEngineDeps(t, progress = []) {
  const realReload = Engine.prototype.reload;
  const reload = t.mock.method(Engine.prototype, "reload", function (source, options) {
    this.detectGpu = async () => ({ hasShaderF16: true, info: {} });
    this.loadPipeline = async ({ record, onProgress }) => {
      loadedRecord = record;
      for (const p of progress) onProgress(p);
      return (pipeline = new ScriptedPipeline([...tok.encode("Hi"), EOS], { after: EOS }));
    };
    return realReload.call(this, source, options);
  });
  return reload.mock;
}

test("CreateMLCEngine(modelId, {appConfig, initProgressCallback}) loads that model, reporting as WebLLM does", async (t) => {
  fakeEngineDeps(t, [
    { phase: "weights", loaded: 5, total: 20, text: "Loading weights" },
    { phase: "shaders", loaded: 1, total: 1, text: "Shaders compiled" },
  ]);
  const reports = [];
  const engine = await CreateMLCEngine("tiny-q4f32_1", { appConfig, initProgressCallback: (r) => reports.push(r) });
  assert.ok(engine instanceof Engine);
  // Not the list's first model, and the device has shader-f16: the id alone chose it.
  assert.equal(engine.getModelInfo().id, "tiny-q4f32_1");
  assert.equal(loadedRecord.model_lib, `${SITE}libs/tiny-q4f32_1-webgpu.wasm`);
  const reply = await engine.chat.completions.create(user("x"));
  assert.equal(reply.choices[0].message.content, "Hi"); // tokenizer and config came from that model's folder
  // Our report, plus WebLLM's progress (of the phase) and timeElapsed (seconds).
  assert.deepEqual(
    reports.map(({ timeElapsed, ...r }) => r),
    [
      { phase: "weights", loaded: 5, total: 20, text: "Loading weights", progress: 0.25 },
      { phase: "shaders", loaded: 1, total: 1, text: "Shaders compiled", progress: 1 },
    ],
  );
  assert.ok(reports.every((r) => r.timeElapsed >= 0 && r.timeElapsed < 60));
  // WebLLM's reload(modelId) switches between the appConfig's models.
  assert.equal((await engine.reload("tiny-q4f16_1")).id, "tiny-q4f16_1");
  assert.equal(loadedRecord.model_lib, `${SITE}libs/tiny-q4f16_1-webgpu.wasm`);
});

test("CreateMLCEngine takes a list of one id, empty chatOpts, logLevel and WebLLM's two cache backends", async (t) => {
  const reload = fakeEngineDeps(t);
  const engine = await CreateMLCEngine(["tiny-q4f16_1"], { appConfig, logLevel: "WARN" }, [{}]);
  assert.equal(engine.getModelInfo().id, "tiny-q4f16_1");
  await CreateMLCEngine("tiny-q4f16_1", { appConfig: { ...appConfig, cacheBackend: "indexeddb" } }, {});
  assert.equal(reload.calls[1].arguments[1].cacheType, "indexeddb");
  assert.equal(reload.calls[0].arguments[1].cacheType, undefined); // the default storage, as WebLLM's "cache"
});

test("CreateMLCEngine refuses, by name and before loading, what it would not do as WebLLM does", async (t) => {
  const reload = fakeEngineDeps(t);
  const refused = async (args, cls, param, message) =>
    assert.rejects(CreateMLCEngine(...args), (err) => {
      assert.ok(err instanceof cls, `${err.name}: ${err.message}`);
      assert.equal(err.param, param);
      assert.match(err.message, message);
      return true;
    });
  // No appConfig: WebLLM would use its prebuilt list on Hugging Face.
  await refused(["tiny-q4f32_1"], errors.InvalidRequestError, "engineConfig.appConfig", /prebuilt model list/);
  const both = ["tiny-q4f16_1", "tiny-q4f32_1"];
  await refused([both, { appConfig }], errors.UnsupportedParameterError, "modelId", /one model/);
  await refused(
    ["tiny-q4f32_1", { appConfig, logitProcessorRegistry: new Map() }],
    errors.UnsupportedParameterError,
    "engineConfig.logitProcessorRegistry",
    /logitProcessorRegistry/,
  );
  await refused(
    ["tiny-q4f32_1", { appConfig, cacheType: "none" }], // ours, not WebLLM's: a typo's fate
    errors.UnsupportedParameterError,
    "engineConfig.cacheType",
    /cacheType/,
  );
  await refused(
    ["tiny-q4f32_1", { appConfig }, { temperature: 0.5, context_window_size: 32 }],
    errors.UnsupportedParameterError,
    "chatOpts",
    /temperature, context_window_size/,
  );
  await refused(
    ["tiny-q4f32_1", { appConfig: { ...appConfig, cacheBackend: "opfs" } }],
    errors.UnsupportedParameterError,
    "engineConfig.appConfig.cacheBackend",
    /"opfs"/,
  );
  assert.equal(reload.callCount(), 0);
  // An id the appConfig lacks is refused as reload refuses it, listing the ids it has.
  await assert.rejects(CreateMLCEngine("tiny-q9", { appConfig }), (err) => {
    assert.ok(err instanceof errors.ModelNotFoundError);
    assert.deepEqual(err.data.available, ["tiny-q4f16_1", "tiny-q4f32_1"]);
    return true;
  });
});

// ---- structured output and tool calls (grammar.js, tool_calls.js) ----------------------------------------

/** Room for the tool prompts (the fixture tokenizer spells them byte by byte). */
const WIDE = { contextWindowSize: 1024 };
const PERSON = {
  type: "object",
  properties: {
    name: { type: "string", maxLength: 8 },
    size: { enum: ["S", "M", "L"] },
    tags: { type: "array", items: { type: "boolean" }, minItems: 1, maxItems: 3 },
    home: { type: "object", properties: { floor: { type: "integer", minimum: 0, maximum: 9 } }, required: ["floor"] },
  },
  required: ["name", "size", "tags", "home"],
};

/** @param {any} v */
function checkPerson(v) {
  assert.deepEqual(Object.keys(v), ["name", "size", "tags", "home"]);
  assert.ok(typeof v.name === "string" && v.name.length <= 8 && !/[\u0000-\u001f"\\]/.test(v.name));
  assert.ok(["S", "M", "L"].includes(v.size));
  assert.ok(v.tags.length >= 1 && v.tags.length <= 3 && v.tags.every((t) => typeof t === "boolean"));
  assert.ok(Number.isInteger(v.home.floor) && v.home.floor >= 0 && v.home.floor <= 9);
}

test("json_schema: a noisy model's output follows the schema, the same whether masked on the GPU or the CPU", async () => {
  const request = {
    ...user("Describe a person."),
    response_format: { type: "json_schema", json_schema: { name: "person", schema: PERSON } },
    max_tokens: 200,
  };
  const outputs = [];
  for (const pipe of [new HistoryPipeline(WIDE), new GpuSamplingPipeline(WIDE)]) {
    const engine = await loadEngine({ pipe });
    const out = await engine.chat.completions.create(request);
    assert.equal(out.choices[0].finish_reason, "stop");
    checkPerson(JSON.parse(out.choices[0].message.content));
    outputs.push(out.choices[0].message.content);
  }
  assert.equal(pipeline.gpuChoices > 0, true, "the GPU path chose the tokens");
  assert.equal(outputs[0], outputs[1]);
  const engine = await loadEngine({ pipe: new HistoryPipeline(WIDE) });
  const logprobs = await engine.chat.completions.create({ ...request, logprobs: true, n: 2, temperature: 1, seed: 4 });
  for (const c of logprobs.choices) checkPerson(JSON.parse(c.message.content));
});

test("json_object gives an object; a schema the engine cannot follow is refused on response_format", async () => {
  const engine = await loadEngine({ pipe: new GpuSamplingPipeline(WIDE) });
  const out = await engine.chat.completions.create({ ...user("hi"), response_format: { type: "json_object" }, max_tokens: 200 });
  const text = out.choices[0].message.content;
  if (out.choices[0].finish_reason === "stop") assert.equal(typeof JSON.parse(text), "object");
  assert.match(text, /^\{/);
  const bad = { type: "json_schema", json_schema: { name: "x", schema: { type: "frog" } } };
  await assert.rejects(engine.chat.completions.create({ ...user("hi"), response_format: bad }), (err) => {
    assert.ok(err instanceof errors.InvalidRequestError);
    assert.equal(err.param, "response_format");
    assert.match(err.message, /frog/);
    return true;
  });
});

const TOOL_TEMPLATE =
  "{%- if tools %}<|im_start|>system\nTools:\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}<|im_end|>\n{% endif %}" +
  "{%- for m in messages %}{%- if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant\n" +
  '{% for c in m.tool_calls %}<tool_call>\n{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}\n</tool_call>{% endfor %}<|im_end|>\n' +
  "{% elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>\n" +
  "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{%- endfor %}" +
  "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
const WEATHER_TOOLS = [
  {
    type: "function",
    function: {
      name: "get_weather",
      parameters: { type: "object", properties: { unit: { enum: ["C", "F"] } }, required: ["unit"] },
    },
  },
];

/** An engine on a model whose template shows tools (Qwen2.5's shape) and whose config names the hermes format. */
async function toolEngine(pipe) {
  const saved = [tokenizerConfig.chat_template, chatConfig.tool_call_format];
  tokenizerConfig.chat_template = TOOL_TEMPLATE;
  chatConfig.tool_call_format = "hermes";
  try {
    return await loadEngine({ pipe });
  } finally {
    [tokenizerConfig.chat_template, chatConfig.tool_call_format] = saved;
  }
}

test("tool_choice required: the tools reach the template, the call comes back as tool_calls, then a round trip", async () => {
  const engine = await toolEngine(new GpuSamplingPipeline(WIDE));
  // One call and nothing after it (parallel calls would let text follow a call, as in the Python engine).
  const ask = { ...user("Weather?"), tools: WEATHER_TOOLS, tool_choice: "required", parallel_tool_calls: false, max_tokens: 200 };
  const out = await engine.chat.completions.create(ask);
  assert.match(engine.applyChatTemplate(ask.messages), /^<\|im_start\|>user/, "no tools without a request");
  const [choice] = out.choices;
  assert.equal(choice.finish_reason, "tool_calls");
  assert.equal(choice.message.content, null);
  const [call] = choice.message.tool_calls;
  assert.equal(call.function.name, "get_weather");
  assert.ok(["C", "F"].includes(JSON.parse(call.function.arguments).unit));
  assert.ok(out.usage.prompt_tokens > tok.encode("<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n").length + 20);
  const messages = [...ask.messages, choice.message, { role: "tool", tool_call_id: call.id, content: "21 C" }];
  const shown = engine.applyChatTemplate(messages);
  assert.ok(shown.includes('<tool_call>\n{"name": "get_weather"'), shown);
  assert.ok(shown.includes("<tool_response>\n21 C\n</tool_response>"));
  const reply = await engine.chat.completions.create({ messages, tools: WEATHER_TOOLS, max_tokens: 8 });
  assert.ok(reply.usage.prompt_tokens > out.usage.prompt_tokens);
});

test("streamed tool calls come as OpenAI's deltas: id, type and name, then the arguments; then tool_calls", async () => {
  const engine = await toolEngine(new GpuSamplingPipeline(WIDE));
  const named = { type: "function", function: { name: "get_weather" } };
  const request = { ...user("Weather?"), tools: WEATHER_TOOLS, tool_choice: named, max_tokens: 200 };
  const whole = await engine.chat.completions.create(request);
  const chunks = [];
  for await (const c of await engine.chat.completions.create({ ...request, stream: true })) chunks.push(c);
  const deltas = chunks.flatMap((c) => c.choices[0].delta.tool_calls ?? []);
  assert.equal(deltas.length, 2);
  assert.deepEqual(Object.keys(deltas[0]), ["index", "id", "type", "function"]);
  assert.deepEqual(deltas[0].function, { name: "get_weather", arguments: "" });
  assert.equal(deltas[1].function.arguments, whole.choices[0].message.tool_calls[0].function.arguments);
  assert.equal(chunks.at(-1).choices[0].finish_reason, "tool_calls");
  assert.ok(chunks.every((c) => !c.choices[0].delta.content), "no content around the call");
});

test("a model whose template takes no tools refuses them on tools", async () => {
  const engine = await loadEngine({ pipe: new HistoryPipeline(WIDE) });
  await assert.rejects(
    engine.chat.completions.create({ ...user("hi"), tools: WEATHER_TOOLS }),
    (err) => err instanceof errors.UnsupportedParameterError && err.param === "tools",
  );
  const none = await engine.chat.completions.create({ ...user("hi"), tools: WEATHER_TOOLS, tool_choice: "none", max_tokens: 3 });
  assert.equal(none.choices[0].message.tool_calls, undefined);
});
