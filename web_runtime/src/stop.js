// Stop strings over streamed text. A stop string can span several tokens ("\n\nUser:" arriving as
// "\n", "\nUs", "er:"), so text that could still be the start of a stop string is held back until the
// next piece decides it; the stop string itself and anything after it are never emitted.

export class StopStringFilter {
  /** @param {string[]} stops  non-empty strings; an empty list passes text straight through */
  constructor(stops) {
    this.stops = stops.filter((s) => s.length > 0);
    this.pending = "";
    this.stopped = false;
  }

  /**
   * @param {string} text  the next piece of generated text
   * @returns {{text: string, stopped: boolean}}  what may be emitted now; stopped once a stop string matched
   */
  push(text) {
    if (this.stopped) return { text: "", stopped: true };
    this.pending += text;
    let cut = -1;
    for (const stop of this.stops) {
      const at = this.pending.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      const out = this.pending.slice(0, cut);
      this.pending = "";
      this.stopped = true;
      return { text: out, stopped: true };
    }
    const hold = this.heldLength();
    const out = this.pending.slice(0, this.pending.length - hold);
    this.pending = this.pending.slice(this.pending.length - hold);
    return { text: out, stopped: false };
  }

  /** @returns {string} the held-back tail, once generation ended for another reason */
  flush() {
    const out = this.stopped ? "" : this.pending;
    this.pending = "";
    return out;
  }

  /** Length of the longest suffix of `pending` that is a proper prefix of some stop string. */
  heldLength() {
    let hold = 0;
    for (const stop of this.stops) {
      const max = Math.min(stop.length - 1, this.pending.length);
      for (let n = max; n > hold; n--) {
        if (this.pending.endsWith(stop.slice(0, n))) {
          hold = n;
          break;
        }
      }
    }
    return hold;
  }
}
