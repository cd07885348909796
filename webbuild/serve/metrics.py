"""Prometheus metrics of the REST API: what the server sees per request, and the engine's scheduler gauges.

Each app has its own registry (tests build many apps in one process); gauges are read from
``engine.metrics()`` when scraped, so they are never stale.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TOKEN_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_GAUGES = {
    "running": "Sequences prefilling or decoding now (a request with n choices has n).",
    "waiting": "Sequences queued for a slot.",
    "kv_cache_used_tokens": "Tokens held in the KV cache by running sequences.",
    "kv_cache_cached_tokens": "Tokens held in the KV cache only by cached prefixes (evicted when pages are needed).",
    "kv_cache_capacity_tokens": "Tokens the KV cache can hold.",
}
log = logging.getLogger("webbuild.serve")


class _EngineGauges(Collector):
    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        try:
            values = self.read()
        except Exception:  # a scrape must not fail because the engine is busy or broken
            log.exception("engine.metrics() failed")
            return
        for key, help_text in _GAUGES.items():
            if key in values:
                yield GaugeMetricFamily(f"webbuild_{key}", help_text, value=float(values[key]))
        if "prefix_cache_reused_tokens" in values:
            yield CounterMetricFamily(
                "webbuild_prefix_cache_reused_tokens",
                "Prompt tokens whose KV came from the prefix cache instead of being prefilled.",
                value=float(values["prefix_cache_reused_tokens"]),
            )
        used, capacity = values.get("kv_cache_used_tokens"), values.get("kv_cache_capacity_tokens")
        if used is not None and capacity:
            yield GaugeMetricFamily("webbuild_kv_cache_usage_ratio", "KV cache use, 0 to 1.", value=used / capacity)


class ServerMetrics:
    """The counters and histograms the API updates, plus the engine gauges; ``render()`` is the /metrics body."""

    def __init__(self, engine_metrics: Callable[[], dict[str, Any]] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "webbuild_requests", "API requests by endpoint and HTTP status.", ["endpoint", "status"], registry=r
        )
        self.prompt_tokens = Counter("webbuild_prompt_tokens", "Prompt tokens prefilled.", registry=r)
        self.completion_tokens = Counter("webbuild_completion_tokens", "Tokens generated (decoded).", registry=r)
        self.aborted = Counter(
            "webbuild_aborted_requests",
            "Requests (streamed or not) aborted because the client disconnected before the answer was complete.",
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "webbuild_time_to_first_token_seconds",
            "From the request arriving to its first generated text.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inter_token_latency = Histogram(
            "webbuild_inter_token_latency_seconds",
            "Gap between streamed chunks of one response (one chunk is usually one token).",
            buckets=_TOKEN_GAP_BUCKETS,
            registry=r,
        )
        self.request_duration = Histogram(
            "webbuild_request_duration_seconds",
            "From the request arriving to its last byte of output.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        if engine_metrics is not None:
            r.register(_EngineGauges(engine_metrics))

    def usage(self, usage: dict[str, Any] | None) -> None:
        """Counts the tokens of a finished request from its OpenAI ``usage`` object."""
        if not usage:
            return
        self.prompt_tokens.inc(max(int(usage.get("prompt_tokens") or 0), 0))
        self.completion_tokens.inc(max(int(usage.get("completion_tokens") or 0), 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
