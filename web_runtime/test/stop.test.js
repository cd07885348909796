import { test } from "node:test";
import assert from "node:assert/strict";
import { StopStringFilter } from "../src/stop.js";

function run(stops, pieces) {
  const f = new StopStringFilter(stops);
  let out = "";
  let stopped = false;
  for (const p of pieces) {
    const r = f.push(p);
    out += r.text;
    if (r.stopped) {
      stopped = true;
      break;
    }
  }
  if (!stopped) out += f.flush();
  return { out, stopped };
}

test("a stop string split across tokens is caught and never emitted", () => {
  assert.deepEqual(run(["\nUser:"], ["Hi", " there", "\n", "Us", "er:", " more"]), { out: "Hi there", stopped: true });
});

test("text that only looks like a stop-string start is released once it diverges", () => {
  const f = new StopStringFilter(["END"]);
  assert.deepEqual(f.push("the E"), { text: "the ", stopped: false });
  assert.deepEqual(f.push("N"), { text: "", stopped: false });
  assert.deepEqual(f.push("D?"), { text: "", stopped: true });
  const g = new StopStringFilter(["END"]);
  g.push("the E");
  assert.deepEqual(g.push("NTRY"), { text: "ENTRY", stopped: false });
});

test("the earliest of several stop strings wins, even inside one piece", () => {
  assert.deepEqual(run(["STOP", "END"], ["a END b STOP"]), { out: "a ", stopped: true });
});

test("a held-back partial match is flushed when generation ends otherwise", () => {
  assert.deepEqual(run(["END"], ["abc", "EN"]), { out: "abcEN", stopped: false });
});

test("no stop strings: text passes straight through", () => {
  assert.deepEqual(run([], ["a", "b"]), { out: "ab", stopped: false });
});

/** The specification, rescanning everything: after each piece, the earliest start of any stop string ends it. */
function rescanned(stops, pieces) {
  let text = "";
  for (const piece of pieces) {
    text += piece;
    const hits = stops.map((s) => text.indexOf(s)).filter((at) => at >= 0);
    if (hits.length) return { out: text.slice(0, Math.min(...hits)), stopped: true };
  }
  return { out: text, stopped: false };
}

test("stop strings match the rescanning specification on random streams", () => {
  let seed = 7;
  const rand = (n) => ((seed = (seed * 1103515245 + 12345) % 2147483648) % n);
  const word = (alphabet, max) => Array.from({ length: 1 + rand(max) }, () => alphabet[rand(alphabet.length)]).join("");
  for (let i = 0; i < 400; i++) {
    const stops = Array.from({ length: 1 + rand(4) }, () => word("ab", 5));
    const pieces = Array.from({ length: 1 + rand(12) }, () => word("abc", 3));
    assert.deepEqual(run(stops, pieces), rescanned(stops, pieces), JSON.stringify({ stops, pieces }));
  }
});
