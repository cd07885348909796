"""Serving over HTTP on the CPU: `webbuild serve` (each quantization) beside llama.cpp's server, in one run.

    .venv/bin/pip install -e '.[bench]'      # llama-cpp-python[server]; builds llama.cpp (10-20 min on 2 cores)
    .venv/bin/python benchmarks/serve_throughput.py [--preset smollm2-135m-instruct]
        [--quantizations q4f32_1,q4f16_1] [--concurrency 1,4,16] [--max-tokens 32] [--threads 2]
        [--level-timeout 1200] [--sites DIR] [--no-llama-cpp] [--json FILE]

Both servers are started as subprocesses on loopback and driven alike through their OpenAI API: for every
concurrency level, each server in turn gets that many simultaneous streaming chat requests (short fixed prompts,
greedy), so machine noise lands on all of them level by level. llama.cpp runs the preset's own GGUF (the file
webbuild quantizes from); sites are packaged into DIR (default dist/serve-bench) when missing.

Per request: time to first content token, and decode tokens/s = (tokens - 1) / (end of stream - first token).
Per level: aggregate tokens/s = all completion tokens / wall time of the level. Tokens are the server's
`usage.completion_tokens` when it streams usage (webbuild does), else the number of content chunks
(llama-cpp-python streams one chunk per token and no usage). Replies that stop early count what they produced.
A server that takes longer than --level-timeout for one level has its requests cancelled (counted as far as they
got), is stopped so it cannot slow the others, and is skipped at higher levels. The servers are always stopped at
the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from webbuild.build.presets import fetch_weights, load_preset

REPO = Path(__file__).resolve().parent.parent
PROMPTS = [
    "Write a short poem about the sea.",
    "Explain what a compiler does.",
    "List three facts about Paris.",
    "How do plants make food?",
]
# Not one of PROMPTS: llama-cpp-python keeps the previous request's KV cache and skips the prefill of a shared
# prefix, so a warm-up with a measured prompt would hide that prompt's prefill at concurrency 1.
WARM_UP_PROMPT = "Say hello."
INSTALL_HINT = "install it with `.venv/bin/pip install -e '.[bench]'` (builds llama.cpp from source, 10-20 min)"


@dataclass
class Server:
    """One server subprocess: how to start it, where it listens, where its output goes."""

    name: str
    quantization: str
    argv: list[str]
    port: int
    ready_path: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    load_s: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class RequestResult:
    """Filled in as the stream arrives, so a request cut off at the level's time limit still tells what it got.
    Times are ``time.perf_counter()`` readings taken here, as a client sees them."""

    sent: float = 0.0
    first: float | None = None  # first content chunk
    last: float | None = None  # latest content chunk
    end: float | None = None  # stream finished ([DONE])
    chunks: int = 0
    usage_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None

    @property
    def tokens(self) -> int:
        return self.usage_tokens if self.usage_tokens is not None else self.chunks

    @property
    def ttft_s(self) -> float | None:
        return None if self.first is None else self.first - self.sent

    @property
    def decode_tok_s(self) -> float | None:
        """Tokens after the first over the time after the first (to the end of the stream, or the latest token
        of a request that was cut off)."""
        stop = self.end or self.last
        if self.first is None or stop is None or self.tokens < 2 or stop <= self.first:
            return None
        return (self.tokens - 1) / (stop - self.first)

    def summary(self) -> dict[str, object]:
        return {
            "ttft_s": self.ttft_s,
            "decode_tok_s": self.decode_tok_s,
            "tokens": self.tokens,
            "counted_by": "usage" if self.usage_tokens is not None else "chunks",
            "finished": self.end is not None,
            "finish_reason": self.finish_reason,
            "error": self.error,
        }


@dataclass
class LevelResult:
    server: str
    quantization: str
    concurrency: int
    ttft_median_s: float | None
    decode_median_tok_s: float | None
    aggregate_tok_s: float
    wall_s: float
    tokens: int
    finished: int  # requests whose stream ended
    stopped_early: int  # of those, replies that ended (EOS) before max_tokens
    errors: int
    cut: bool  # the level ran past --level-timeout and its requests were cancelled
    requests: list[RequestResult] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        data = {k: v for k, v in asdict(self).items() if k != "requests"}
        return {**data, "requests": [r.summary() for r in self.requests]}


# -- servers ------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_llama_cpp() -> None:
    """Fails early, before minutes of packaging, when llama-cpp-python or its server extras are missing."""
    probe = subprocess.run([sys.executable, "-c", "import llama_cpp.server.app"], capture_output=True, text=True)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        sys.exit(f"error: llama-cpp-python[server] is not importable ({last});\n{INSTALL_HINT}")


def llama_cpp_version() -> str:
    out = subprocess.run([sys.executable, "-c", "import llama_cpp; print(llama_cpp.__version__)"], capture_output=True)
    return out.stdout.decode().strip()


def ensure_site(preset: str, quantization: str, sites: Path) -> Path:
    """A packaged site per quantization, built once with `webbuild package` (cached compiles make reruns fast)."""
    site = sites / f"{preset}-{quantization}"
    if not (site / "manifest.json").is_file():
        print(f"packaging {preset} {quantization} into {site}", flush=True)
        subprocess.run([webbuild_exe(), "package", preset, "-q", quantization, "-o", str(site)], check=True)
    return site


def webbuild_exe() -> str:
    """The `webbuild` beside this interpreter (the venv's), so the benchmark needs no activated venv."""
    exe = Path(sys.executable).with_name("webbuild")
    return str(exe) if exe.exists() else "webbuild"


def start(server: Server, timeout_s: float) -> None:
    """Starts the server in its own process group (so it and its children can be killed as one) and waits
    until it answers ``ready_path``."""
    t0 = time.perf_counter()
    with server.log.open("wb") as log:
        server.proc = subprocess.Popen(
            server.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            tail = server.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}; its log ends:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + server.ready_path, timeout=2).status_code == 200:
                server.load_s = time.perf_counter() - t0
                return
        time.sleep(0.5)
    raise RuntimeError(f"{server.name} did not answer {server.ready_path} within {timeout_s:.0f}s (log: {server.log})")


def stop(server: Server) -> None:
    """SIGTERM to the server's process group, SIGKILL if it lingers."""
    proc = server.proc
    if proc is None or proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def running(servers: list[Server], timeout_s: float) -> Iterator[None]:
    """Every server up while the block runs; all killed afterwards, also on Ctrl-C or SIGTERM."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        for server in servers:
            print(f"starting {server.name} ({server.quantization}) on port {server.port}", flush=True)
            start(server, timeout_s)
            print(f"  ready after {server.load_s:.1f}s", flush=True)
        yield
    finally:
        for server in servers:
            stop(server)
        signal.signal(signal.SIGTERM, previous)


# -- load -----------------------------------------------------------------------------------------------------
async def one_request(
    client: httpx.AsyncClient, server: Server, prompt: str, max_tokens: int, record: RequestResult
) -> None:
    """One streaming chat completion, recorded into ``record`` as it arrives."""
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},  # webbuild sends usage; llama-cpp-python ignores the field
    }
    record.sent = time.perf_counter()
    try:
        async with client.stream("POST", server.url + "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                record.error = f"HTTP {response.status_code}: {text[:300]}"
                return
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    record.end = time.perf_counter()
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    record.error = json.dumps(chunk["error"])[:300]
                    return
                if chunk.get("usage"):
                    record.usage_tokens = chunk["usage"].get("completion_tokens")
                for choice in chunk.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        record.chunks += 1
                        record.last = time.perf_counter()
                        record.first = record.first or record.last
                    record.finish_reason = choice.get("finish_reason") or record.finish_reason
        if record.end is None:
            record.error = "the stream ended without [DONE]"
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"


async def run_level(
    server: Server, concurrency: int, max_tokens: int, timeout_s: float, prompts: list[str] = PROMPTS
) -> LevelResult:
    """``concurrency`` requests sent at once; the level's wall time runs until the last one ends, or until
    ``timeout_s``, when the rest are cancelled (the client disconnects) and counted as far as they got."""
    records = [RequestResult() for _ in range(concurrency)]
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s + 60), limits=limits) as client:
        t0 = time.perf_counter()
        tasks = [
            asyncio.create_task(one_request(client, server, prompts[i % len(prompts)], max_tokens, record))
            for i, record in enumerate(records)
        ]
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        wall = time.perf_counter() - t0
    ttfts = [r.ttft_s for r in records if r.ttft_s is not None and r.error is None]
    decodes = [r.decode_tok_s for r in records if r.decode_tok_s is not None and r.error is None]
    finished = [r for r in records if r.end is not None and r.error is None]
    total = sum(r.tokens for r in records)
    return LevelResult(
        server=server.name,
        quantization=server.quantization,
        concurrency=concurrency,
        ttft_median_s=statistics.median(ttfts) if ttfts else None,
        decode_median_tok_s=statistics.median(decodes) if decodes else None,
        aggregate_tok_s=total / wall,
        wall_s=wall,
        tokens=total,
        finished=len(finished),
        stopped_early=sum(r.finish_reason == "stop" for r in finished),
        errors=sum(r.error is not None for r in records),
        cut=bool(pending),
        requests=records,
    )


# -- report ---------------------------------------------------------------------------------------------------
def machine() -> dict[str, object]:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu": cpu, "loadavg": os.getloadavg(), "python": platform.python_version()}


def table(results: list[LevelResult]) -> str:
    """Markdown, as BENCHMARKS.md shows it; a level cut at the time limit shows what it had by then."""
    rows = [
        "| server | quantization | concurrency | TTFT s (median) | decode tok/s per request (median) "
        "| aggregate tok/s | tokens (finished requests) | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ttft = "-" if r.ttft_median_s is None else f"{r.ttft_median_s:.3f}"
        decode = "-" if r.decode_median_tok_s is None else f"{r.decode_median_tok_s:.2f}"
        notes = (", cut at the time limit" if r.cut else "") + (f", {r.errors} failed" if r.errors else "")
        rows.append(
            f"| {r.server} | {r.quantization} | {r.concurrency} | {ttft} | {decode} | {r.aggregate_tok_s:.2f} "
            f"| {r.tokens} ({r.finished}/{r.concurrency}{notes}) | {r.wall_s:.1f} |"
        )
    return "\n".join(rows)


def git_revision() -> str:
    out = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return out.stdout.strip() or "?"


def build_servers(args: argparse.Namespace) -> list[Server]:
    logs = args.sites / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    servers = []
    for q in args.quantizations.split(","):
        site = ensure_site(args.preset, q, args.sites)
        # server mode: up to 16 sequences decode together (the default, local, runs 4 and queues the rest)
        argv = [webbuild_exe(), "serve", str(site), "--device", "cpu", "--mode", "server", "--port", "{port}"]
        servers.append(Server("webbuild serve", q, argv, 0, "/health", logs / f"webbuild-{q}.log"))
    if not args.no_llama_cpp:
        gguf = fetch_weights(load_preset(args.preset))  # the file webbuild itself quantizes from
        argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1"]
        argv += ["--port", "{port}", "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads)]
        # It serves one request at a time (one llama.cpp context behind a lock; it has no parallel-slots
        # option). By default a waiting request cuts the running stream short, which would turn concurrency
        # into truncated replies: queue them instead.
        argv += ["--n_ctx", "2048", "--interrupt_requests", "False", "--model_alias", args.preset]
        label = f"{gguf.stem.rsplit('.', 1)[-1]} (GGUF)"
        servers.append(Server("llama.cpp server", label, argv, 0, "/v1/models", logs / "llama-cpp.log"))
    for server in servers:
        server.port = free_port()
        server.argv = [a.replace("{port}", str(server.port)) for a in server.argv]
    return servers


def measure(args: argparse.Namespace, servers: list[Server], results: list[LevelResult], notes: list[str]) -> None:
    """Level by level, server after server; a server that runs past the time limit is stopped (so it cannot
    slow the others down) and skipped from then on."""
    active = list(servers)

    def drop(server: Server, why: str) -> None:
        notes.append(f"{server.name} {server.quantization}: {why}; stopped, skipped at higher levels")
        print(notes[-1], flush=True)
        stop(server)
        active.remove(server)

    for server in servers:  # first-request costs (lazy init, page faults) stay out of the figures
        warm = asyncio.run(run_level(server, 1, 2, args.level_timeout, [WARM_UP_PROMPT]))
        print(f"warmed {server.name} {server.quantization} in {warm.wall_s:.1f}s", flush=True)
        if warm.cut or warm.errors:
            drop(server, f"warm-up {'over the time limit' if warm.cut else warm.requests[0].error}")
    for n in [int(c) for c in args.concurrency.split(",")]:
        for server in list(active):
            r = asyncio.run(run_level(server, n, args.max_tokens, args.level_timeout))
            results.append(r)
            print(
                f"{server.name} {server.quantization} x{n}: TTFT {r.ttft_median_s}, decode {r.decode_median_tok_s}, "
                f"aggregate {r.aggregate_tok_s:.2f} tok/s, {r.finished}/{n} finished in {r.wall_s:.1f}s",
                flush=True,
            )
            if r.cut:
                drop(server, f"concurrency {n} ran past --level-timeout {args.level_timeout:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smollm2-135m-instruct")
    parser.add_argument("--quantizations", default="q4f32_1,q4f16_1", help="webbuild builds to serve, comma-separated")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads (webbuild/TVM uses every core)")
    parser.add_argument("--sites", type=Path, default=REPO / "dist" / "serve-bench", help="where sites are packaged")
    parser.add_argument("--no-llama-cpp", action="store_true", help="webbuild only (llama-cpp-python not needed)")
    parser.add_argument("--start-timeout", type=float, default=1800, help="seconds a server may take to load")
    parser.add_argument(
        "--level-timeout", type=float, default=1200, help="seconds one server may take for one level (or warm-up)"
    )
    parser.add_argument("--json", type=Path, help="also write every figure (and each request) here")
    args = parser.parse_args()

    if not args.no_llama_cpp:
        check_llama_cpp()
    servers = build_servers(args)
    info: dict[str, object] = {
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "webbuild": git_revision(),
        "llama_cpp_python": None if args.no_llama_cpp else llama_cpp_version(),
        "max_tokens": args.max_tokens,
    }
    results: list[LevelResult] = []
    notes: list[str] = []
    try:
        with running(servers, args.start_timeout):
            measure(args, servers, results, notes)
    except KeyboardInterrupt:
        notes.append("interrupted; the servers were stopped")
    info["loadavg_end"] = os.getloadavg()
    info["load_s"] = {f"{s.name} {s.quantization}": round(s.load_s, 1) for s in servers}
    print(f"\nmax_tokens {args.max_tokens}, greedy; {os.cpu_count()} CPUs; server start-up s: {info['load_s']}\n")
    print(table(results))
    for note in notes:
        print(f"- {note}")
    if args.json:
        payload = {**info, "notes": notes, "results": [r.summary() for r in results]}
        args.json.write_text(json.dumps(payload, indent=2))
    if "interrupted; the servers were stopped" in notes:
        sys.exit(130)


if __name__ == "__main__":
    main()
