"""``webbuild bench``: load time, time to first token and tokens/s of a site in headless Chromium, beside the
Python engine (CPU, or CUDA where there is a GPU) on the same files and prompt; medians of repeated requests.
With ``profile``, the browser also reports where one prefill chunk and one decode step spend their time
(dispatches by kernel, GPU time from timestamp queries, read-back, sampling, worker messaging)."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from webbuild import _log
from webbuild.browser import BrowserChoice
from webbuild.errors import WebbuildError
from webbuild.verify.report import adapter_name

BENCH_PROMPT = "Write one sentence about the sea."
LOAD_TIMEOUT_S = 900.0

# Chrome rounds timestamp queries to 100 µs unless its WebGPU developer features are on.
PROFILE_FLAGS = ("--enable-webgpu-developer-features",)


@dataclass(frozen=True)
class BenchOptions:
    prompt: str = BENCH_PROMPT
    max_tokens: int = 8
    repeat: int = 3  # timed requests after one warm-up; figures are their medians
    browser: BrowserChoice = field(default_factory=BrowserChoice)
    profile: bool = False
    profile_decode_steps: int = 16


@dataclass
class RunFigures:
    where: str
    load_s: float
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    runs: int = 1
    decode_tokens_per_s_runs: list[float] = field(default_factory=list)
    cached_tokens: int = 0  # prompt tokens a timed request took from the KV cache (most of any run; 0 = cold)
    worker_round_trip_ms: float | None = None
    profile: dict[str, Any] | None = None
    reply: str = ""  # the last timed request's greedy reply: the engines' should be the same text

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunFailure:
    """An engine whose run failed: the JSON and the table keep it beside the figures of the others."""

    where: str
    error: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


ENGINES = ("cpu", "cuda", "browser")


def bench_all(
    site: Path, engines: Collection[str], options: BenchOptions = BenchOptions()
) -> list[RunFigures | RunFailure]:
    """Each named engine in turn (``ENGINES`` order). One that fails does not lose the others' figures: a
    browser that cannot load the model on a GPU machine still leaves the CUDA row it is compared with."""
    results: list[RunFigures | RunFailure] = []
    for name in (e for e in ENGINES if e in engines):
        try:
            results.append(bench_browser(site, options) if name == "browser" else bench_engine(site, name, options))
        except Exception as e:  # noqa: BLE001 - reported as this engine's row; the command then exits non-zero
            message = f"{e} ({e.tip})" if isinstance(e, WebbuildError) and e.tip else str(e)
            results.append(RunFailure(name, f"{type(e).__name__}: {message}"))
    return results


def _median(usages: list[dict[str, Any]], key: str) -> float:
    return statistics.median(u.get("extra", {}).get(key, 0.0) for u in usages)


def _figures(where: str, load_s: float, usages: list[dict[str, Any]], reply: str) -> RunFigures:
    """Medians over the timed requests' usage (``usage.extra`` holds the engines' timings)."""
    return RunFigures(
        where=where,
        load_s=round(load_s, 2),
        prompt_tokens=usages[0]["prompt_tokens"],
        completion_tokens=int(statistics.median(u["completion_tokens"] for u in usages)),
        time_to_first_token_s=round(_median(usages, "time_to_first_token_s"), 4),
        prefill_tokens_per_s=round(_median(usages, "prefill_tokens_per_s"), 2),
        decode_tokens_per_s=round(_median(usages, "decode_tokens_per_s"), 2),
        runs=len(usages),
        decode_tokens_per_s_runs=[round(u.get("extra", {}).get("decode_tokens_per_s", 0.0), 2) for u in usages],
        cached_tokens=max(u.get("prompt_tokens_details", {}).get("cached_tokens", 0) for u in usages),
        reply=reply,
    )


def _request(options: BenchOptions) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": options.prompt}],
        "max_tokens": options.max_tokens,
        "temperature": 0,
    }


# Runs in the page: one warm-up request, then `repeat` timed ones; a few no-op calls time the worker hop.
_RUN_JS = """(async (req, repeat) => {
  const engine = window.webbuildApp.engine;
  await engine.chat.completions.create(req);
  const usages = [];
  let reply = "";
  for (let i = 0; i < repeat; i++) {
    await engine.resetChat(true); // every timed request prefills its whole prompt, not the KV the last one left
    const out = await engine.chat.completions.create(req);
    usages.push(out.usage);
    reply = out.choices[0].message.content;
  }
  const hops = [];
  for (let i = 0; i < 21; i++) {
    const t = performance.now();
    await engine.runtimeStats();
    hops.push(performance.now() - t);
  }
  hops.sort((a, b) => a - b);
  return { usages, reply, hopMs: hops[10], adapter: (await engine.getModelInfo()).adapter };
})"""

_PROFILE_JS = """(async (messages, decodeSteps) => {
  const engine = window.webbuildApp.engine;
  const ids = await engine.tokenize(await engine.applyChatTemplate(messages, { addGenerationPrompt: true }));
  return await engine.profile(ids, { decodeSteps });
})"""

_READY_JS = "['ready', 'error'].includes(document.body?.dataset.state)"


@contextmanager
def site_page(site: Path, choice: BrowserChoice | None = None) -> Iterator[tuple[Any, float]]:
    """The site served on loopback and its chat page open in headless Chromium once the model has loaded:
    the page (``window.webbuildApp.engine`` is its engine) and the load time in seconds."""
    from webbuild.browser import launch_chromium
    from webbuild.serve.app import serving

    with serving(site) as url, launch_chromium(choice or BrowserChoice()) as browser:
        page = browser.open(url)
        t0 = time.monotonic()
        page.wait_for(_READY_JS, timeout_s=LOAD_TIMEOUT_S)
        load_s = time.monotonic() - t0
        if page.evaluate("document.body.dataset.state") == "error":
            text = page.evaluate("document.getElementById('error').innerText").strip().replace("\n", " ")
            raise WebbuildError(f"the site failed to load its model in Chromium: {text}", tip=_errors(page.errors()))
        yield page, load_s


def bench_browser(site: Path, options: BenchOptions = BenchOptions()) -> RunFigures:
    """The site's chat page in headless Chromium (``options.browser``: which one, extra flags); requests go
    through the page's public engine API, which runs the model in its Web Worker."""
    choice = options.browser
    if options.profile:
        choice = BrowserChoice(choice.executable, (*choice.flags, *PROFILE_FLAGS))
    with site_page(site, choice) as (page, load_s):
        _log.step(
            f"browser: model loaded in {load_s:.1f}s; {options.repeat + 1} requests of {options.max_tokens} tokens"
        )
        out = page.evaluate(f"{_RUN_JS}({json.dumps(_request(options))}, {options.repeat})")
        figures = _figures(f"browser ({adapter_name(out['adapter'] or {})})", load_s, out["usages"], out["reply"])
        figures.worker_round_trip_ms = round(out["hopMs"], 3)
        if options.profile:
            _log.step("browser: profiling one prefill chunk and decode steps")
            messages = _request(options)["messages"]
            figures.profile = page.evaluate(f"{_PROFILE_JS}({json.dumps(messages)}, {options.profile_decode_steps})")
            figures.profile["worker_round_trip_ms"] = figures.worker_round_trip_ms
    return figures


def _errors(lines: list[str]) -> str | None:
    return ("the page said: " + " | ".join(lines[-3:]))[:1500] if lines else None


def bench_engine(site: Path, device: str, options: BenchOptions = BenchOptions()) -> RunFigures:
    """The Python engine on ``device`` (cpu: the llvm build; cuda: the CUDA build, compiled on first use),
    without its prefix cache, so that every timed request prefills its whole prompt as the browser's does."""
    from webbuild.engine.engine import Engine, EngineConfig

    t0 = time.monotonic()
    engine = Engine(site, device=device, config=EngineConfig(prefix_cache=False))
    load_s = time.monotonic() - t0
    request = _request(options)
    engine.chat.completions.create(**request)  # warm-up
    outs = [engine.chat.completions.create(**request) for _ in range(options.repeat)]
    reply = outs[-1]["choices"][0]["message"]["content"]
    return _figures(f"Python engine ({device})", load_s, [o["usage"] for o in outs], reply)


# ---- the printed report ------------------------------------------------------------------------------


def format_runs(results: list[RunFigures | RunFailure]) -> str:
    """The figures side by side; with a CUDA row, each browser row's decode speed as a fraction of it; whether
    the browser's greedy reply is the Python engine's; then the engines that failed, with why."""
    runs = [r for r in results if isinstance(r, RunFigures)]
    width = max([len(r.where) for r in runs] + [6])
    lines = [
        f"{'engine':<{width}} {'load s':>7} {'prompt':>6} {'TTFT ms':>8} {'prefill tok/s':>13} "
        f"{'decode tok/s':>12} {'runs':>4}"
    ]
    for r in runs:
        lines.append(
            f"{r.where:<{width}} {r.load_s:>7.1f} {r.prompt_tokens:>6} {r.time_to_first_token_s * 1000:>8.1f} "
            f"{r.prefill_tokens_per_s:>13.1f} {r.decode_tokens_per_s:>12.1f} {r.runs:>4}"
        )
    cuda = next((r for r in runs if r.where == "Python engine (cuda)"), None)
    for r in runs:
        if r.where.startswith("browser") and cuda and cuda.decode_tokens_per_s > 0:
            lines.append(f"browser decode / CUDA engine decode: {r.decode_tokens_per_s / cuda.decode_tokens_per_s:.2f}")
        if r.worker_round_trip_ms is not None:
            lines.append(f"worker round trip (page -> worker -> page, no-op call): {r.worker_round_trip_ms:.2f} ms")
    browser = next((r for r in runs if r.where.startswith("browser")), None)
    for r in runs:
        if browser and r is not browser:
            lines.append(f"greedy reply, browser against {r.where}: {_compare_replies(browser.reply, r.reply)}")
    lines += [f"{r.where}: failed: {r.error}" for r in results if isinstance(r, RunFailure)]
    return "\n".join(lines)


def _compare_replies(a: str, b: str) -> str:
    if a == b:
        return f"the same ({len(a)} characters)"
    return f"different from character {len(os.path.commonprefix([a, b]))} ({len(a)} and {len(b)} characters)"


def format_profile(profile: dict[str, Any], top: int = 12) -> str:
    """Per runtime configuration (as shipped, then without each saving), one block per phase (the prefill of
    the prompt, a decode step): where its wall time goes, its dispatches, and the kernels that take the most
    GPU time (or the most dispatches without timestamps)."""
    lines = [
        f"profile on {adapter_name(profile.get('adapter') or {})}, {profile.get('layers')} layers; GPU timestamps: "
        f"{'yes' if profile.get('timestamps') else 'no (counts only)'}"
    ]
    for config in profile.get("configurations", []):
        lines.append(f"[{config['name']}] sampling on the {'GPU' if config['gpu_sampling'] else 'CPU'}")
        for phase in ("prefill", "decode"):
            lines += _phase_lines(phase, config[phase], top)
    if profile.get("worker_round_trip_ms") is not None:
        lines.append(
            f"worker messaging: {profile['worker_round_trip_ms']:.3f} ms a round trip (page -> worker -> page)"
        )
    return "\n".join(lines)


def _phase_lines(phase: str, p: dict[str, Any], top: int) -> list[str]:
    gpu = p.get("gpu_ms")
    lines = [
        f"  {phase}: {p['tokens']} token(s) a step, median of {p['steps']} steps",
        f"    wall {p['wall_ms']:.3f} ms = encode {p['encode_ms']:.3f} + sampling {p['sample_ms']:.3f}"
        f" + wait {p['wait_ms']:.3f} + read-back {p['read_ms']:.3f} ms ({p['read_bytes']} B)",
        f"    GPU busy {gpu:.3f} ms (first pass start to last pass end {p['gpu_span_ms']:.3f} ms)"
        if gpu is not None
        else "    GPU time: no timestamp-query on this adapter",
        f"    dispatches {p['dispatches']} ({p['dispatches_per_layer']:g} in each layer + "
        f"{p['dispatches_outside_layers']:g} outside them), compute passes {p['passes']}, "
        f"submits {p['submits']}, bind groups made {p['bind_groups_made']} / reused {p['bind_groups_reused']}, "
        f"uniform writes {p['uniform_writes']} / skipped {p['uniform_writes_skipped']}",
    ]
    if p.get("steps_recorded") or p.get("steps_replayed"):
        lines.append(
            f"    of {p['steps']} steps, {p['steps_replayed']} replayed from a recording, "
            f"{p['steps_recorded']} recorded"
        )
    kernels = sorted(p["kernels"], key=lambda k: (-(k.get("gpu_ms") or 0), -k["count"], k["name"]))
    for k in kernels[:top]:
        t = f"{k['gpu_ms']:.4f} ms" if k.get("gpu_ms") is not None else ""
        lines.append(f"      {k['count']:>6.1f} x {k['name']:<56} {t}")
    if len(kernels) > top:
        rest = kernels[top:]
        lines.append(f"      {sum(k['count'] for k in rest):>6.1f} x ({len(rest)} other kernels)")
    return lines
