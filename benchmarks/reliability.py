"""What a `webbuild serve` withstands: fuzzing, maximal requests, slow clients. Figures for BENCHMARKS.md.

    .venv/bin/python benchmarks/reliability.py [--model smollm2-135m-instruct] [--examples 300] [--json FILE]

One server subprocess (`webbuild serve MODEL`, API only, the default `local` mode) on loopback, then:

The model is a preset (its context window sizes the maximal requests).

1. fuzz: schemathesis's CLI against its /openapi.json, every operation, positive and negative generation,
   --examples per operation; counted from the HAR it records: requests, status codes, server errors (5xx).
2. /health under load: /health is polled every 20 ms on a connection of its own while a maximal request
   runs; reported as p50 / p99 / max milliseconds. Maximal requests: (a) a body at the model's body limit,
   all text (parsed, templated and tokenized, then refused: past the window); (b) a prompt filling the window but
   16 tokens, generating those 16 (the longest prefill); (c) the probe's 7.9 MB body (refused unread).
3. memory: the server's resident set size when ready and after each kind (--repeat bodies of each refused kind,
   --generations window-filling generations).
4. slow clients: 300 idle connections, one trickling its headers and one stalling its body; when each is dropped.

The server's output goes to $TMPDIR/webbuild-reliability-server.log.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from webbuild.build.presets import load_preset
from webbuild.serve.routes import body_limit
from webbuild.serve.server import Limits

LOG = Path(tempfile.gettempdir()) / "webbuild-reliability-server.log"
CHAT = "/v1/chat/completions"
JSON = {"content-type": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "webbuild.cli", "serve", model, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=LOG.open("w"),
    )
    deadline = time.monotonic() + 1800
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the server did not get ready; see {LOG}")
        time.sleep(0.5)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fuzz(url: str, examples: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        har = Path(tmp, "run.har")
        started = time.monotonic()
        run = subprocess.run(
            [str(Path(sys.executable).parent / "schemathesis"), "run", f"{url}/openapi.json", "--url", url,
             "--mode", "all", "--max-examples", str(examples), "--checks", "all", "--generation-deterministic",
             "--report", "har", "--report-har-path", str(har), "--request-timeout", "60"],
            capture_output=True, text=True,
        )  # fmt: skip
        entries = json.loads(har.read_text())["log"]["entries"]
    statuses = Counter(e["response"]["status"] for e in entries)
    tail = [line for line in run.stdout.splitlines() if line.strip()][-8:]
    return {
        "requests": len(entries),
        "seconds": round(time.monotonic() - started, 1),
        "statuses": dict(sorted(statuses.items())),
        "server_errors": sum(n for s, n in statuses.items() if s >= 500),
        "schemathesis_exit": run.returncode,
        "summary": tail,
    }


class HealthProbe:
    """Polls /health every 20 ms in a thread of its own connection pool; latencies in ms."""

    def __init__(self, url: str) -> None:
        self.url, self.times, self.stop = url, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                client.get(f"{self.url}/health")
                self.times.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.02)

    def __enter__(self) -> HealthProbe:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def summary(self) -> dict[str, float]:
        times = sorted(self.times)
        return {
            "polls": len(times),
            "p50_ms": round(statistics.median(times), 1),
            "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 1),
            "max_ms": round(times[-1], 1),
        }


def maximal_requests(window: int, repeat: int, generations: int) -> dict[str, tuple[str, int]]:
    """Each kind of maximal request and how many times to send it."""
    limit = body_limit(window)
    words = "the quick brown fox jumps over the lazy dog and keeps running far away "
    text = (words * (limit // len(words) + 1))[: limit - 200]
    fill = " ".join(["word"] * (window - 60))  # about window - 40 tokens with the chat template
    big = "x" * (79 * 100_000)
    chat = {"messages": [{"role": "user", "content": fill}], "max_tokens": 16, "temperature": 0}
    return {
        "body at the limit, refused after tokenizing": (
            json.dumps({"messages": [{"role": "user", "content": text}]}),
            repeat,
        ),
        "prompt filling the window, 16 tokens generated": (json.dumps(chat), generations),
        "the probe's 7.9 MB body, refused unread": (
            json.dumps({"messages": [{"role": "user", "content": big}]}),
            repeat,
        ),
    }


def under_load(url: str, body: str, repeat: int) -> dict[str, Any]:
    statuses: Counter[int] = Counter()
    with HealthProbe(url) as probe, httpx.Client(timeout=600) as client:
        time.sleep(0.2)
        started = time.perf_counter()
        for _ in range(repeat):
            statuses[client.post(f"{url}{CHAT}", content=body, headers=JSON).status_code] += 1
        seconds = time.perf_counter() - started
    return {"statuses": dict(statuses), "seconds_per_request": round(seconds / repeat, 2), "health": probe.summary()}


def slow_clients(port: int) -> dict[str, Any]:
    limits = Limits()
    opened = time.monotonic()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
    trickler = socket.create_connection(("127.0.0.1", port))
    staller = socket.create_connection(("127.0.0.1", port))
    staller.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    closed: dict[str, float] = {}

    def wait(name: str, sock: socket.socket) -> None:
        sock.settimeout(120)
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass
        closed[name] = round(time.monotonic() - opened, 2)

    threads = [threading.Thread(target=wait, args=(f"idle{i}", s)) for i, s in enumerate(idle)]
    threads += [threading.Thread(target=wait, args=("stalled body", staller))]
    for t in threads:
        t.start()
    health = []
    for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
        if "trickled headers" in closed:
            break
        try:
            trickler.sendall(bytes([byte]))
        except OSError:
            closed["trickled headers"] = round(time.monotonic() - opened, 2)
            break
        t0 = time.perf_counter()
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
        health.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.5)
    for t in threads:
        t.join()
    idle_closed = [v for k, v in closed.items() if k.startswith("idle")]
    return {
        "limits_s": {"headers": limits.header_timeout_s, "body": limits.body_timeout_s},
        "idle_connections": len(idle),
        "idle_dropped_s": {"min": min(idle_closed), "max": max(idle_closed)},
        "trickled_headers_dropped_s": closed.get("trickled headers"),
        "stalled_body_dropped_s": closed.get("stalled body"),
        "health_meanwhile_max_ms": round(max(health), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a preset")
    parser.add_argument("--examples", type=int, default=300, help="fuzz examples per operation and mode")
    parser.add_argument("--repeat", type=int, default=10, help="maximal bodies of each kind")
    parser.add_argument("--generations", type=int, default=3, help="window-filling generations (minutes each on a CPU)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(args.model, port)
    try:
        window = int(load_preset(args.model).defaults["context_window_size"])
        report: dict[str, Any] = {"model": args.model, "context_window_size": window, "body_limit": body_limit(window)}
        report["rss_mb_ready"] = round(rss_mb(proc.pid), 1)
        report["fuzz"] = fuzz(url, args.examples)
        report["rss_mb_after_fuzz"] = round(rss_mb(proc.pid), 1)
        report["maximal"] = {}
        for name, (body, repeat) in maximal_requests(window, args.repeat, args.generations).items():
            report["maximal"][name] = under_load(url, body, repeat) | {"rss_mb_after": round(rss_mb(proc.pid), 1)}
        report["slow_clients"] = slow_clients(port)
        report["rss_mb_end"] = round(rss_mb(proc.pid), 1)
    finally:
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        proc.wait(30)
        stopped = round(time.monotonic() - t0, 2)
    report["ctrl_c_exit_s"] = stopped
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
