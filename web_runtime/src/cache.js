// Where weight files live between visits, with integrity. tvmjs fetches tensor-cache.json and its shards
// through an "artifact cache" object; this one checks each download against the sha256 that manifest.json
// lists, and keys stored entries by that digest, so a rebuilt site (same file names, new contents) never
// loads stale shards from an earlier visit, and entries of earlier builds are dropped.

import { IntegrityError, ModelLoadError } from "./errors.js";

/** @typedef {"cache" | "none"} StorageKind  Cache API, or nothing (fetch on every load) */

export class VerifiedCache {
  /**
   * @param {string} scope  Cache API cache name
   * @param {object} options
   * @param {Map<string, string>} [options.digests]  absolute URL -> expected sha256 (hex)
   * @param {StorageKind} [options.storage]
   * @param {CacheStorage} [options.cacheStorage]  injectable for tests
   */
  constructor(scope, { digests = new Map(), storage = "cache", cacheStorage = globalThis.caches } = {}) {
    this.scope = scope;
    this.digests = digests;
    this.storage = storage === "cache" && cacheStorage ? cacheStorage : null;
    /** @type {Promise<Cache> | null} */ this.cachePromise = null;
    /** @type {Set<string>} */ this.pruned = new Set();
  }

  /**
   * The stored entry for `url`, else a verified download (stored for next time).
   * @param {string} url
   * @param {string} [storetype]  "json" | "arraybuffer"
   * @param {AbortSignal} [signal]
   */
  async fetchWithCache(url, storetype, signal) {
    const hit = await this.lookup(url);
    const bytes = hit ? new Uint8Array(await hit.arrayBuffer()) : await this.download(url, signal);
    if (!hit) await this.store(url, bytes);
    return convert(bytes, storetype);
  }

  /**
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

  /** @returns {Promise<Cache | null>} */
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
   * Drops entries of the same file from earlier builds (other digests), once per URL.
   * @param {Cache} cache
   * @param {string} url
   */
  async prune(cache, url) {
    if (this.pruned.has(url) || !this.digests.has(url)) return;
    this.pruned.add(url);
    const keep = this.key(url);
    for (const request of await cache.keys()) {
      if (request.url !== keep && request.url.split("?sha256=")[0] === url) await cache.delete(request);
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
    if (!response.ok) throw new ModelLoadError(`Could not fetch ${url}: HTTP ${response.status}.`, { data: { url } });
    const bytes = new Uint8Array(await response.arrayBuffer());
    const expected = this.digests.get(url);
    if (expected) {
      const actual = await sha256Hex(bytes);
      if (actual !== null && actual !== expected) {
        throw new IntegrityError(`${url} does not match the sha256 in manifest.json.`, {
          tip: "Reload the page; if it persists, the site was deployed partially or is being updated.",
          data: { url, expected, actual },
        });
      }
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
 * @param {string} [storetype]
 */
function convert(bytes, storetype) {
  if (storetype?.toLowerCase() === "json") return JSON.parse(new TextDecoder().decode(bytes));
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
}
