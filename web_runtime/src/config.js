// What to load: the site's manifest.json (written by `webbuild package`) or WebLLM's model records, the
// variant that suits this GPU, and the model's mlc-chat-config.json facts the engine needs (generation
// defaults, stop tokens). Also the other direction: the WebLLM appConfig that loads a site's variants.

import { ModelLoadError, ModelNotFoundError, ShaderF16UnsupportedError } from "./errors.js";

/**
 * @typedef {object} Variant  one build of the site's model (a quantization), as manifest.json lists it
 * @property {string} id  "<model_id>-<quantization>"
 * @property {string} quantization
 * @property {string} model_url  folder with tensor-cache.json, shards, configs (relative to the manifest)
 * @property {string} model_lib  the -webgpu.wasm model library (relative to the manifest)
 * @property {boolean} [needs_shader_f16]
 * @property {number} [context_window_size]
 * @property {{path: string, bytes: number, sha256: string}[]} [files]  paths relative to the manifest
 */

/**
 * @typedef {object} Manifest  manifest.json (webbuild/site_format/manifest.py writes it)
 * @property {number} format_version
 * @property {string} name
 * @property {string} [created]
 * @property {string} default_variant
 * @property {Variant[]} variants
 */

/**
 * @typedef {object} WebLLMModelRecord  one model of WebLLM's appConfig.model_list (its ModelRecord)
 * @property {string} model  the model folder; WebLLM appends `resolve/main/` unless it names a revision
 * @property {string} model_id
 * @property {string} model_lib  the -webgpu.wasm model library
 * @property {string[]} [required_features]  WebGPU features, e.g. "shader-f16"
 * @property {{context_window_size?: number}} [overrides]  mlc-chat-config.json fields WebLLM overrides
 */

/**
 * @typedef {object} WebLLMAppConfig  what WebLLM's CreateMLCEngine takes as appConfig
 * @property {WebLLMModelRecord[]} model_list
 * @property {string} [cacheBackend]  WebLLM's storage: "cache" | "indexeddb" | "cross-origin" | "opfs"
 * @property {string} [opfsAccessMode]
 */

/** The manifest format this runtime reads (webbuild/site_format/manifest.py FORMAT_VERSION). */
export const MANIFEST_FORMAT_VERSION = 2;

/**
 * @param {string} url
 * @param {string} what  for the error message ("the site manifest")
 * @param {AbortSignal} [signal]
 * @returns {Promise<any>}
 */
export async function fetchJson(url, what, signal) {
  let response;
  try {
    response = await fetch(url, { signal });
  } catch (err) {
    throw new ModelLoadError(`Could not fetch ${what} (${url}): ${errorText(err)}`, { cause: err, data: { url } });
  }
  if (!response.ok) {
    throw new ModelLoadError(`Could not fetch ${what} (${url}): HTTP ${response.status}.`, {
      data: { url, status: response.status },
      tip: response.status === 404 ? "Is the site complete? Re-run `webbuild package`." : null,
    });
  }
  try {
    return await response.json();
  } catch (err) {
    throw new ModelLoadError(`${what} (${url}) is not valid JSON.`, { cause: err, data: { url } });
  }
}

/** @param {Variant} record */
export function needsShaderF16(record) {
  return record.needs_shader_f16 ?? /f16/.test(record.quantization ?? "");
}

/**
 * The variant of the same model that runs without shader-f16, and whether the bundle carries it.
 * @param {Variant} record
 * @param {Variant[]} models
 * @returns {{id: string, record: Variant | null}}
 */
export function f32Variant(record, models) {
  const quant = record.quantization ?? "";
  const base = quant && record.id.endsWith(`-${quant}`) ? record.id.slice(0, -quant.length - 1) : record.id;
  const f32Quant = quant.replace("f16", "f32") || "q4f32_1";
  const id = `${base}-${f32Quant}`;
  const exact = models.find((m) => m.id === id && !needsShaderF16(m));
  const sameBase = models.find((m) => m.id.startsWith(`${base}-`) && !needsShaderF16(m));
  const found = exact ?? sameBase ?? null;
  return { id: found ? found.id : id, record: found };
}

/**
 * Chooses the variant to load. An explicit `requested` id is honoured or refused; without one, the
 * manifest's default is used, swapped for its f32 variant when the adapter lacks shader-f16.
 * @param {Variant[]} models
 * @param {{requested?: string | null, defaultId?: string | null, hasShaderF16: boolean}} options
 * @returns {Variant}
 */
export function pickVariant(models, { requested = null, defaultId = null, hasShaderF16 }) {
  if (models.length === 0) throw new ModelNotFoundError("The manifest lists no models.");
  const wanted = requested ?? defaultId ?? models[0].id;
  const record = models.find((m) => m.id === wanted);
  if (!record) {
    throw new ModelNotFoundError(
      `Model "${wanted}" is not on this site; it has: ${models.map((m) => m.id).join(", ")}.`,
      { param: "model", data: { model: wanted, available: models.map((m) => m.id) } },
    );
  }
  if (hasShaderF16 || !needsShaderF16(record)) return record;
  const alt = f32Variant(record, models);
  if (requested == null && alt.record) return alt.record;
  throw ShaderF16UnsupportedError.forModel(record.id, alt.id, alt.record !== null);
}

/**
 * Resolves a load source to a record whose URLs are absolute.
 * @param {string | Manifest | Variant | WebLLMAppConfig | WebLLMModelRecord} source  manifest URL, manifest
 *   object, one model record, or WebLLM's appConfig or one of its model records
 * @param {{model?: string | null, hasShaderF16: boolean, baseUrl?: string, signal?: AbortSignal}} options
 * @returns {Promise<{record: Variant, variantIds: string[]}>}  `variantIds`: every variant the source lists
 *   (a manifest's, or an appConfig's models), which WebLLM's `reload(modelId)` switches between
 */
export async function resolveModel(source, { model = null, hasShaderF16, baseUrl, signal }) {
  const base = baseUrl ?? globalThis.location?.href;
  /** @type {Manifest | null} */ let manifest = null;
  /** @type {string | undefined} */ let manifestUrl = base;
  if (typeof source === "string") {
    manifestUrl = new URL(source, base).href;
    manifest = await fetchJson(manifestUrl, "the site manifest", signal);
  } else if (source && Array.isArray(/** @type {Manifest} */ (source).variants)) {
    manifest = /** @type {Manifest} */ (source);
  }
  /** @type {Variant[]} */ let variants;
  if (manifest) {
    if (manifest.format_version !== MANIFEST_FORMAT_VERSION || !Array.isArray(manifest.variants)) {
      throw new ModelLoadError(
        `The manifest at ${manifestUrl} has format version ${manifest.format_version}; this runtime reads ` +
          `version ${MANIFEST_FORMAT_VERSION}.`,
        { tip: "Rebuild the site with `webbuild package`, or use the runtime it was built with." },
      );
    }
    variants = manifest.variants;
  } else {
    variants = webllmVariants(source, manifestUrl) ?? [/** @type {Variant} */ (source)];
    if (variants.some((v) => !v || typeof v.model_url !== "string" || typeof v.model_lib !== "string")) {
      throw new ModelLoadError(
        "reload() needs a manifest URL, a manifest, a variant with model_url/model_lib, or WebLLM's appConfig " +
          "or model record ({model, model_id, model_lib}).",
      );
    }
  }
  const record = pickVariant(variants, { requested: model, defaultId: manifest?.default_variant, hasShaderF16 });
  const modelUrl = absoluteUrl(record.model_url, manifestUrl);
  return {
    record: {
      ...record,
      model_url: modelUrl.endsWith("/") ? modelUrl : `${modelUrl}/`,
      model_lib: absoluteUrl(record.model_lib, manifestUrl),
      files: record.files?.map((f) => ({ ...f, path: absoluteUrl(f.path, manifestUrl) })),
    },
    variantIds: variants.map((v) => v.id),
  };
}

/**
 * @param {string} url
 * @param {string | undefined} base  the manifest's or page's URL; none in a worker given absolute URLs
 */
function absoluteUrl(url, base) {
  try {
    return new URL(url, base).href;
  } catch (err) {
    throw new ModelLoadError(`The model URL "${url}" is relative; outside a page, reload() needs a baseUrl.`, {
      cause: err,
    });
  }
}

/**
 * WebLLM's model folder URL as WebLLM itself reads it: a folder, and `resolve/main/` appended unless the URL
 * already names a revision (`.../resolve/<rev>/`), so a record that loads in WebLLM loads here too.
 * @param {string} model
 * @param {string} [base]
 */
export function webllmModelUrl(model, base) {
  const folder = model.endsWith("/") ? model : `${model}/`;
  return absoluteUrl(/.+\/resolve\/.+\//.test(folder) ? folder : `${folder}resolve/main/`, base);
}

/**
 * The variants WebLLM's appConfig or model record describes, or null when `source` is neither.
 * @param {unknown} source
 * @param {string} [base]  resolves relative URLs (WebLLM itself wants absolute ones)
 * @returns {Variant[] | null}
 */
export function webllmVariants(source, base) {
  const obj = /** @type {Record<string, any>} */ (source);
  const list = Array.isArray(obj?.model_list) ? obj.model_list : obj && "model_id" in obj ? [obj] : null;
  if (!list) return null;
  return list.map((/** @type {Record<string, any>} */ rec, /** @type {number} */ i) => {
    for (const key of ["model", "model_id", "model_lib"]) {
      if (typeof rec?.[key] !== "string" || rec[key] === "") {
        throw new ModelLoadError(`WebLLM model record ${i} has no ${key} (a URL or id string).`, {
          data: { model_id: rec?.model_id ?? null },
        });
      }
    }
    const features = Array.isArray(rec.required_features) ? rec.required_features : [];
    return {
      id: rec.model_id,
      quantization: /(q\d+f\d+(?:_\w+)?)(?:-|$)/.exec(rec.model_id)?.[1] ?? "",
      model_url: webllmModelUrl(rec.model, base),
      model_lib: absoluteUrl(rec.model_lib, base),
      needs_shader_f16: features.includes("shader-f16"),
      context_window_size: rec.overrides?.context_window_size,
    };
  });
}

/**
 * WebLLM's appConfig for a site's variants: the URLs to give WebLLM's CreateMLCEngine. WebLLM appends
 * `resolve/main/` to a model URL that names no revision; the fragment `#/resolve/main/` names one, and
 * is dropped when the folder's files are resolved against the URL, so they are fetched where they are.
 * @param {Manifest} manifest
 * @param {string} manifestUrl  absolute (WebLLM wants absolute model URLs)
 * @returns {WebLLMAppConfig}
 */
export function webllmAppConfig(manifest, manifestUrl) {
  return {
    model_list: manifest.variants.map((v) => {
      const folder = new URL(v.model_url, manifestUrl).href;
      return {
        model: `${folder.endsWith("/") ? folder : `${folder}/`}#/resolve/main/`,
        model_id: v.id,
        model_lib: new URL(v.model_lib, manifestUrl).href,
        ...(needsShaderF16(v) ? { required_features: ["shader-f16"] } : {}),
      };
    }),
  };
}

/**
 * The request defaults a model ships with (mlc-chat-config.json); OpenAI's defaults fill the rest.
 * @param {Record<string, any>} chatConfig
 * @returns {import("./openai.js").ModelDefaults}
 */
export function generationDefaults(chatConfig) {
  /** @type {Record<string, number>} */
  const out = {};
  for (const key of ["temperature", "top_p", "presence_penalty", "frequency_penalty"]) {
    if (typeof chatConfig[key] === "number") out[key] = chatConfig[key];
  }
  return out;
}

/**
 * Token ids that end generation: eos_token_id (int or list), the conversation template's stop tokens,
 * and the tokenizer's eos token.
 * @param {Record<string, any>} chatConfig
 * @param {{eosToken: string | null, tokenId: (t: string) => number | undefined}} tokenizer
 * @returns {Set<number>}
 */
export function stopTokenIds(chatConfig, tokenizer) {
  const ids = new Set();
  const eos = chatConfig.eos_token_id;
  for (const id of Array.isArray(eos) ? eos : [eos]) if (Number.isInteger(id)) ids.add(id);
  for (const id of chatConfig.conv_template?.stop_token_ids ?? []) if (Number.isInteger(id)) ids.add(id);
  if (tokenizer.eosToken) {
    const id = tokenizer.tokenId(tokenizer.eosToken);
    if (id !== undefined) ids.add(id);
  }
  return ids;
}

/**
 * Extra stop strings for chat from the conversation template (e.g. a role marker that is not a special
 * token); special tokens are left out, since they are stopped by id and never decoded into text.
 * @param {Record<string, any>} chatConfig
 * @param {{tokenId: (t: string) => number | undefined}} tokenizer
 * @param {Set<number>} stopIds
 * @returns {string[]}
 */
export function chatStopStrings(chatConfig, tokenizer, stopIds) {
  const strs = chatConfig.conv_template?.stop_str ?? [];
  return strs.filter((s) => typeof s === "string" && s.length > 0 && !stopIds.has(tokenizer.tokenId(s) ?? -1));
}

/** @param {unknown} err */
export function errorText(err) {
  return err instanceof Error ? err.message : String(err);
}
