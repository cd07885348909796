import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { VerifiedCache, sha256Hex } from "../src/cache.js";
import { IntegrityError } from "../src/errors.js";

/** A CacheStorage double keeping bytes in memory. */
class MemoryCache {
  constructor() {
    this.entries = new Map();
  }
  async match(key) {
    const bytes = this.entries.get(typeof key === "string" ? key : key.url);
    return bytes && new Response(bytes);
  }
  async put(key, response) {
    this.entries.set(key, new Uint8Array(await response.arrayBuffer()));
  }
  async delete(key) {
    return this.entries.delete(typeof key === "string" ? key : key.url);
  }
  async keys() {
    return [...this.entries.keys()].map((url) => new Request(url));
  }
}
const storageOf = (cache) => ({ open: async () => cache });

const URL_A = "https://site.test/models/m/params_shard_0.bin";
let served = new Uint8Array([1, 2, 3, 4]);
let fetches = 0;
globalThis.fetch = async (url) => {
  fetches++;
  return String(url) === URL_A ? new Response(served) : new Response('{"a": 1}');
};
const hex = (bytes) => createHash("sha256").update(bytes).digest("hex");

test("sha256Hex matches node's crypto", async () => {
  assert.equal(await sha256Hex(new Uint8Array([1, 2, 3])), hex(new Uint8Array([1, 2, 3])));
});

test("a verified download is stored under its digest and served from the cache afterwards", async () => {
  const mem = new MemoryCache();
  served = new Uint8Array([1, 2, 3, 4]);
  const cache = new VerifiedCache("s", { digests: new Map([[URL_A, hex(served)]]), cacheStorage: storageOf(mem) });
  fetches = 0;
  assert.equal(await cache.hasAllKeys([URL_A]), false);
  await cache.addToCache(URL_A);
  assert.deepEqual([...mem.entries.keys()], [`${URL_A}?sha256=${hex(served)}`]);
  assert.equal(await cache.hasAllKeys([URL_A]), true);
  const buf = await cache.fetchWithCache(URL_A, "arraybuffer");
  assert.deepEqual(new Uint8Array(buf), served);
  assert.equal(fetches, 1);
});

test("a download that does not match the manifest is refused and not stored", async () => {
  const mem = new MemoryCache();
  served = new Uint8Array([9, 9, 9]);
  const cache = new VerifiedCache("s", { digests: new Map([[URL_A, "00".repeat(32)]]), cacheStorage: storageOf(mem) });
  await assert.rejects(cache.fetchWithCache(URL_A, "arraybuffer"), (err) => {
    assert.ok(err instanceof IntegrityError);
    assert.equal(err.code, "integrity_check_failed");
    assert.equal(err.data.actual, hex(served));
    return true;
  });
  assert.equal(mem.entries.size, 0);
});

test("a rebuilt site (new digest, same name) misses the cache and drops the old entry", async () => {
  const mem = new MemoryCache();
  served = new Uint8Array([1]);
  await new VerifiedCache("s", { digests: new Map([[URL_A, hex(served)]]), cacheStorage: storageOf(mem) }).addToCache(
    URL_A,
  );
  served = new Uint8Array([2]);
  const rebuilt = new VerifiedCache("s", { digests: new Map([[URL_A, hex(served)]]), cacheStorage: storageOf(mem) });
  assert.deepEqual(new Uint8Array(await rebuilt.fetchWithCache(URL_A, "arraybuffer")), new Uint8Array([2]));
  assert.deepEqual([...mem.entries.keys()], [`${URL_A}?sha256=${hex(served)}`]);
});

test("without storage every load fetches once per file, JSON included", async () => {
  const cache = new VerifiedCache("s", { storage: "none" });
  assert.equal(await cache.hasAllKeys([URL_A]), true); // tvmjs then skips its pre-download pass
  assert.deepEqual(await cache.fetchWithCache("https://site.test/x.json", "json"), { a: 1 });
});
