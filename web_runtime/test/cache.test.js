import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { VerifiedCache, fetchTensorCacheIndex, sha256Hex } from "../src/cache.js";
import { IntegrityError, ModelLoadError } from "../src/errors.js";

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

/** A cache holding a good copy of URL_A (served = [1, 2, 3, 4]), then damaged by `damage`. */
async function damagedCache(damage) {
  const mem = new MemoryCache();
  served = new Uint8Array([1, 2, 3, 4]);
  const digests = new Map([[URL_A, hex(served)]]);
  await new VerifiedCache("s", { digests, cacheStorage: storageOf(mem) }).addToCache(URL_A);
  const key = `${URL_A}?sha256=${hex(served)}`;
  mem.entries.set(key, damage(mem.entries.get(key)));
  return { mem, key, cache: new VerifiedCache("s", { digests, cacheStorage: storageOf(mem) }) };
}

for (const [name, damage] of [
  ["truncated", (bytes) => bytes.slice(0, 2)],
  ["bit-flipped", (bytes) => bytes.map((b, i) => (i === 3 ? b ^ 0x10 : b))],
  ["emptied", () => new Uint8Array(0)],
]) {
  test(`a ${name} stored entry is detected on read, evicted and fetched again`, async () => {
    const { mem, key, cache } = await damagedCache(damage);
    assert.equal(await cache.hasAllKeys([URL_A]), true); // present: tvmjs skips its download pass
    fetches = 0;
    const warned = [];
    const warn = console.warn;
    console.warn = (msg) => warned.push(msg);
    try {
      assert.deepEqual(new Uint8Array(await cache.fetchWithCache(URL_A, "arraybuffer")), served);
    } finally {
      console.warn = warn;
    }
    assert.equal(fetches, 1);
    assert.deepEqual(mem.entries.get(key), served); // healed for the next visit
    assert.match(warned[0], /params_shard_0\.bin is damaged/);
    fetches = 0;
    await cache.fetchWithCache(URL_A, "arraybuffer");
    assert.equal(fetches, 0);
  });
}

test("a damaged entry whose download is damaged too fails naming the file, and nothing bad is stored", async () => {
  const { mem, cache } = await damagedCache((bytes) => bytes.slice(0, 1));
  served = new Uint8Array([6, 6, 6]); // the server now has other bytes than the manifest lists
  await assert.rejects(cache.fetchWithCache(URL_A, "arraybuffer"), (err) => {
    assert.ok(err instanceof IntegrityError);
    assert.match(err.message, /params_shard_0\.bin does not match the sha256 in manifest\.json/);
    assert.equal(err.data.url, URL_A);
    return true;
  });
  assert.equal(mem.entries.size, 0);
});

test("files are not trusted where they cannot be checked (no WebCrypto)", async () => {
  const subtle = Object.getOwnPropertyDescriptor(globalThis, "crypto");
  Object.defineProperty(globalThis, "crypto", { value: {}, configurable: true });
  try {
    const cache = new VerifiedCache("s", { digests: new Map([[URL_A, hex(served)]]), storage: "none" });
    await assert.rejects(cache.fetchWithCache(URL_A, "arraybuffer"), /cannot be checked/);
  } finally {
    Object.defineProperty(globalThis, "crypto", subtle);
  }
});

test("a file that is not JSON is named", async () => {
  const cache = new VerifiedCache("s", { storage: "none" });
  await assert.rejects(cache.fetchWithCache(URL_A, "json"), /params_shard_0\.bin is not valid JSON/);
});

test("without storage every load fetches once per file, JSON included", async () => {
  const cache = new VerifiedCache("s", { storage: "none" });
  assert.equal(await cache.hasAllKeys([URL_A]), true); // tvmjs then skips its pre-download pass
  assert.deepEqual(await cache.fetchWithCache("https://site.test/x.json", "json"), { a: 1 });
});

// ---- the tensor-cache index of a model folder: tensor-cache.json, or a WebLLM folder's ndarray-cache.json ---

const FOLDER = "https://hf.test/mlc-ai/m-MLC/resolve/main/";
const INDEX = { metadata: { ParamSize: 1 }, records: [{ dataPath: "params_shard_0.bin", records: [] }] };

/** Serves `files` ({name: status or JSON}) under FOLDER for the duration of `body`; returns the URLs fetched. */
async function withFolder(files, body) {
  const saved = globalThis.fetch;
  const asked = [];
  globalThis.fetch = async (url) => {
    asked.push(String(url));
    const entry = files[String(url).slice(FOLDER.length)];
    if (entry === undefined || typeof entry === "number") return new Response("", { status: entry ?? 404 });
    return new Response(JSON.stringify(entry));
  };
  try {
    await body();
  } finally {
    globalThis.fetch = saved;
  }
  return asked;
}

test("the index is tensor-cache.json when the folder has it, without asking for the older name", async () => {
  const files = new VerifiedCache("s", { storage: "none" });
  const asked = await withFolder({ "tensor-cache.json": INDEX, "ndarray-cache.json": {} }, async () => {
    assert.deepEqual(await fetchTensorCacheIndex(files, FOLDER), INDEX);
  });
  assert.deepEqual(asked, [`${FOLDER}tensor-cache.json`]);
});

test("a folder with ndarray-cache.json only: that index, and tvmjs asking for tensor-cache.json gets it", async () => {
  const files = new VerifiedCache("s", { storage: "none" });
  const asked = await withFolder({ "ndarray-cache.json": INDEX }, async () => {
    assert.deepEqual(await fetchTensorCacheIndex(files, FOLDER), INDEX);
    assert.deepEqual(await files.fetchWithCache(`${FOLDER}tensor-cache.json`, "json"), INDEX);
  });
  assert.deepEqual(asked, [`${FOLDER}tensor-cache.json`, `${FOLDER}ndarray-cache.json`, `${FOLDER}ndarray-cache.json`]);
});

test("a folder with neither index is a load error naming both names; other failures are not retried", async () => {
  await withFolder({}, async () => {
    await assert.rejects(fetchTensorCacheIndex(new VerifiedCache("s", { storage: "none" }), FOLDER), (err) => {
      assert.ok(err instanceof ModelLoadError && !(err instanceof IntegrityError));
      assert.match(err.message, /has no tensor-cache\.json or ndarray-cache\.json/);
      assert.match(err.tip, /mlc-chat-config\.json/);
      return true;
    });
  });
  const asked = await withFolder({ "tensor-cache.json": 500, "ndarray-cache.json": INDEX }, async () => {
    await assert.rejects(fetchTensorCacheIndex(new VerifiedCache("s", { storage: "none" }), FOLDER), /HTTP 500/);
  });
  assert.equal(asked.length, 1);
});
