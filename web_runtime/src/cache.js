// Where a variant's files live between visits, with integrity. Every file the runtime loads (configs,
// tokenizer, model library, tensor-cache.json, weight shards) goes through a VerifiedCache, which checks it
// against the sha256 that manifest.json lists twice: when it is downloaded, and every time it is read back
// from storage, where a quota eviction half-way, a crash during a write or a bit flip on disk can damage it.
// A damaged stored entry is evicted and downloaded again on the spot, so a page heals without a reload; a
// download that does not match fails with an IntegrityError naming the file. tvmjs takes the same object as
// its "artifact cache" for the shards. Entries are keyed by their digest, so a rebuilt site (same file
// names, new contents) never loads stale files from an earlier visit, and entries of earlier builds are dropped.

import { IntegrityError, ModelLoadError } from "./errors.js";

/** @typedef {"cache" | "indexeddb" | "none"} StorageKind  Cache API, IndexedDB, or nothing (fetch every load) */

/** The storage scope (Cache API cache / IndexedDB database) of model files. */
export const MODEL_CACHE_SCOPE = "webbuild/model";

/**
 * The Cache API methods VerifiedCache uses; IndexedDB is adapted to them (idbStorage).
 * @typedef {object} EntryStore
 * @property {(key: string) => Promise<Response | undefined>} match
 * @property {(key: string, response: Response) => Promise<void>} put
 * @property {(key: string | Request) => Promise<boolean>} delete
 * @property {() => Promise<readonly {url: string}[]>} keys
 */

/**
 * The verified files of one variant: digests from its manifest entry (absolute URLs, as resolveModel makes
 * them), stored as `cacheType` says.
 * @param {import("./config.js").Variant} record
 * @param {StorageKind} [cacheType]
 */
export function variantFiles(record, cacheType = "cache") {
  const digests = new Map((record.files ?? []).map((f) => [f.path, f.sha256]));
  return new VerifiedCache(MODEL_CACHE_SCOPE, { digests, storage: cacheType });
}

/**
 * The names a model folder's tensor-cache index goes by: tensor-cache.json, or ndarray-cache.json, as MLC LLM
 * wrote it before TVM renamed NDArray to Tensor (WebLLM's older model folders on Hugging Face carry it).
 */
export const TENSOR_CACHE_NAMES = ["tensor-cache.json", "ndarray-cache.json"];

/**
 * A model folder's tensor-cache index, under whichever name the folder has it; tvmjs, which asks `files`
 * for tensor-cache.json only, gets the same file.
 * @param {VerifiedCache} files
 * @param {string} modelUrl  the folder (absolute, ending in "/")
 * @param {AbortSignal} [signal]
 * @returns {Promise<{records: any[], metadata?: Record<string, any>}>}
 */
export async function fetchTensorCacheIndex(files, modelUrl, signal) {
  const [current, older] = TENSOR_CACHE_NAMES.map((n) => new URL(n, modelUrl).href);
  try {
    return await files.fetchWithCache(current, "json", signal);
  } catch (err) {
    if (!isMissing(err)) throw err;
  }
  try {
    const index = await files.fetchWithCache(older, "json", signal);
    files.aliases.set(current, older);
    return index;
  } catch (err) {
    if (!isMissing(err)) throw err;
    throw new ModelLoadError(`The model folder ${modelUrl} has no ${TENSOR_CACHE_NAMES.join(" or ")}.`, {
      cause: err,
      data: { url: modelUrl, status: 404 },
      tip: "Is the model URL the folder that holds mlc-chat-config.json and the weight shards?",
    });
  }
}

/** @param {unknown} err  whether a download failed because the file is not there (HTTP 404) */
function isMissing(err) {
  return err instanceof ModelLoadError && err.data.status === 404;
}

export class VerifiedCache {
  /**
   * @param {string} scope  Cache API cache / IndexedDB database name
   * @param {object} options
   * @param {Map<string, string>} [options.digests]  absolute URL -> expected sha256 (hex); unlisted files are
   *   loaded unchecked (a variant record given without `files`)
   * @param {StorageKind} [options.storage]  where entries live; without the Cache API (insecure context),
   *   "cache" means none
   * @param {{open: (scope: string) => Promise<EntryStore>}} [options.cacheStorage]  injectable for tests
   */
  constructor(scope, { digests = new Map(), storage = "cache", cacheStorage } = {}) {
    this.scope = scope;
    this.digests = digests;
    /** @type {{open: (scope: string) => Promise<EntryStore>} | null} */
    this.storage =
      cacheStorage ??
      (storage === "cache" ? (globalThis.caches ?? null) : storage === "indexeddb" ? idbStorage() : null);
    /** @type {Promise<EntryStore> | null} */ this.cachePromise = null;
    /** @type {Set<string>} */ this.pruned = new Set();
    /** @type {Map<string, string>} URL asked for -> URL fetched instead (an index under its older name) */
    this.aliases = new Map();
  }

  /**
   * The stored entry for `url` if it still matches the manifest, else a verified download (stored for next time).
   * @param {string} url
   * @param {string} [storetype]  "json" | "arraybuffer"
   * @param {AbortSignal} [signal]
   */
  async fetchWithCache(url, storetype, signal) {
    url = this.aliases.get(url) ?? url;
    let bytes = await this.readVerified(url);
    if (bytes === null) {
      bytes = await this.download(url, signal);
      await this.store(url, bytes);
    }
    return convert(bytes, storetype, url);
  }

  /**
   * Stores `url` unless an entry is there; whether that entry is intact is checked when it is read.
   * @param {string} url
   * @param {string} [storetype]
   * @param {AbortSignal} [signal]
   */
  async addToCache(url, storetype, signal) {
    if (!this.storage || (await this.lookup(url))) return;
    await this.store(url, await this.download(url, signal));
  }

  /** @param {string[]} urls */
  async hasAllKeys(urls) {
    if (!this.storage) return true; // nothing to pre-download: fetchWithCache fetches each file once
    for (const url of urls) if (!(await this.lookup(url))) return false;
    return true;
  }

  /** @param {string} url */
  async deleteInCache(url) {
    const cache = await this.cache();
    await cache?.delete(this.key(url));
  }

  // ---- internals ------------------------------------------------------------------------------------

  /** @returns {Promise<EntryStore | null>} */
  cache() {
    if (!this.storage) return Promise.resolve(null);
    this.cachePromise ??= this.storage.open(this.scope);
    return this.cachePromise;
  }

  /**
   * The cache key: the URL plus the expected digest, so new contents under an old name miss the cache.
   * @param {string} url
   */
  key(url) {
    const digest = this.digests.get(url);
    return digest ? `${url}?sha256=${digest}` : url;
  }

  /** @param {string} url */
  async lookup(url) {
    const cache = await this.cache();
    if (!cache) return undefined;
    await this.prune(cache, url);
    return cache.match(this.key(url));
  }

  /**
   * The stored bytes of `url`, or null when there are none or they no longer match the manifest (the
   * damaged entry is evicted: the caller downloads the file again).
   * @param {string} url
   * @returns {Promise<Uint8Array | null>}
   */
  async readVerified(url) {
    const hit = await this.lookup(url);
    if (!hit) return null;
    const bytes = new Uint8Array(await hit.arrayBuffer());
    if ((await this.mismatch(url, bytes)) === null) return bytes;
    console.warn(`The stored copy of ${url} is damaged (it no longer matches manifest.json); fetching it again.`);
    await this.deleteInCache(url);
    return null;
  }

  /**
   * Null when `bytes` are what the manifest lists for `url` (or it lists nothing), else their sha256.
   * @param {string} url
   * @param {Uint8Array} bytes
   * @returns {Promise<string | null>}
   */
  async mismatch(url, bytes) {
    const expected = this.digests.get(url);
    if (!expected) return null;
    const actual = await sha256Hex(bytes);
    if (actual === null) {
      throw new IntegrityError(`${url} cannot be checked against manifest.json: WebCrypto is unavailable here.`, {
        tip: "Open the page over https:// or on localhost (a secure context), where browsers provide WebCrypto.",
        data: { url },
      });
    }
    return actual === expected ? null : actual;
  }

  /**
   * Drops entries of the same file from earlier builds (other digests), once per URL.
   * @param {EntryStore} cache
   * @param {string} url
   */
  async prune(cache, url) {
    if (this.pruned.has(url) || !this.digests.has(url)) return;
    this.pruned.add(url);
    const keep = this.key(url);
    for (const request of await cache.keys()) {
      if (request.url !== keep && request.url.split("?sha256=")[0] === url) await cache.delete(request.url);
    }
  }

  /**
   * @param {string} url
   * @param {Uint8Array} bytes
   */
  async store(url, bytes) {
    const cache = await this.cache();
    if (!cache) return;
    try {
      await cache.put(this.key(url), new Response(/** @type {BodyInit} */ (bytes)));
    } catch (err) {
      // Out of quota: the model still loads, it just is not kept for the next visit.
      console.warn(`Not caching ${url}: ${err instanceof Error ? err.message : err}`);
    }
  }

  /**
   * A download of `url` that matches the manifest.
   * @param {string} url
   * @param {AbortSignal} [signal]
   * @returns {Promise<Uint8Array>}
   */
  async download(url, signal) {
    let response;
    try {
      response = await fetch(url, { signal });
    } catch (err) {
      throw new ModelLoadError(`Could not fetch ${url}: ${err instanceof Error ? err.message : err}`, { cause: err });
    }
    if (!response.ok) {
      throw new ModelLoadError(`Could not fetch ${url}: HTTP ${response.status}.`, {
        data: { url, status: response.status },
        tip: response.status === 404 ? "Is the site complete? Re-run `webbuild package`." : null,
      });
    }
    const bytes = new Uint8Array(await response.arrayBuffer());
    const actual = await this.mismatch(url, bytes);
    if (actual !== null) {
      throw new IntegrityError(`${url} does not match the sha256 in manifest.json.`, {
        tip: "Reload the page; if it persists, the site was deployed partially or is being updated.",
        data: { url, expected: this.digests.get(url), actual },
      });
    }
    return bytes;
  }
}

/**
 * @param {Uint8Array} bytes
 * @returns {Promise<string | null>}  null where WebCrypto is unavailable (insecure context)
 */
export async function sha256Hex(bytes) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) return null;
  const digest = new Uint8Array(await subtle.digest("SHA-256", /** @type {BufferSource} */ (bytes)));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * @param {Uint8Array} bytes
 * @param {string | undefined} storetype
 * @param {string} url
 */
function convert(bytes, storetype, url) {
  if (storetype?.toLowerCase() !== "json") {
    return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  }
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    throw new ModelLoadError(`${url} is not valid JSON.`, { cause: err, data: { url } });
  }
}

// ---- IndexedDB as an EntryStore ------------------------------------------------------------------------

/** @returns {{open: (scope: string) => Promise<EntryStore>} | null} */
function idbStorage() {
  const idb = globalThis.indexedDB;
  if (!idb) return null;
  return {
    open: (scope) =>
      new Promise((resolve, reject) => {
        const request = idb.open(scope, 1);
        request.onupgradeneeded = () => request.result.createObjectStore("files");
        request.onerror = () => reject(request.error);
        request.onsuccess = () => resolve(idbStore(request.result));
      }),
  };
}

/**
 * @param {IDBDatabase} db
 * @returns {EntryStore}
 */
function idbStore(db) {
  /**
   * @param {IDBTransactionMode} mode
   * @param {(store: IDBObjectStore) => IDBRequest} action
   * @returns {Promise<any>}
   */
  const run = (mode, action) =>
    new Promise((resolve, reject) => {
      const request = action(db.transaction("files", mode).objectStore("files"));
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  return {
    match: async (key) => {
      const bytes = await run("readonly", (s) => s.get(key));
      return bytes === undefined ? undefined : new Response(bytes);
    },
    put: async (key, response) => {
      const bytes = new Uint8Array(await response.arrayBuffer());
      await run("readwrite", (s) => s.put(bytes, key));
    },
    delete: async (key) => {
      await run("readwrite", (s) => s.delete(typeof key === "string" ? key : key.url));
      return true;
    },
    keys: async () => (await run("readonly", (s) => s.getAllKeys())).map((/** @type {string} */ url) => ({ url })),
  };
}
