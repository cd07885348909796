"""``webbuild verify`` results as a terminal table, JSON, and a self-contained HTML report (inline SVG charts
of divergence by position; no scripts, fonts or other external resources)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from webbuild.verify.metrics import PositionMetrics, Summary, summarize

if TYPE_CHECKING:
    from webbuild.commands.verify import PromptResult, VerifyResult

GATED_NOTE = "same quantization: held to the thresholds"
LOSS_NOTE = "quantization loss against the unquantized model: reported, not thresholded"
DEVICE_NOTE = "same quantization on another device: reported"
_CONTEXT_TOKENS = 8


@dataclass(frozen=True)
class Point:
    """A position worth looking at in one comparison."""

    why: str  # "first top-1 mismatch", "largest KL", "largest |Δlogit|"
    comparison: str
    prompt: str
    position: int
    in_continuation: bool
    context: str  # the text just before the prediction
    forced: str | None  # the token that actually follows in the scored sequence
    reference_token: str
    candidate_token: str
    kl: float
    abs_max: float
    margin: float  # reference's preference for its token over the candidate's, in logits

    def describe(self) -> str:
        where = "continuation" if self.in_continuation else "prompt"
        ref, cand = self.comparison.split(" vs ")[1], self.comparison.split(" vs ")[0]
        picks = (
            f"both pick {self.reference_token!r}"
            if self.reference_token == self.candidate_token and self.margin == 0
            else f"{ref} picks {self.reference_token!r}, {cand} {self.candidate_token!r} (margin {self.margin:.3g})"
        )
        return (
            f"{self.why}: prompt {self.prompt!r}, position {self.position} ({where}), after "
            f"{_ellipsis(self.context)!r}: {picks}; KL {self.kl:.3g}, max |Δlogit| {self.abs_max:.3g}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {k: _num(v) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def divergence_points(result: VerifyResult, key: str) -> list[Point]:
    """The first top-1 mismatch (if any), and the positions of the largest KL and |Δlogit|."""
    found: list[tuple[str, PromptResult, int]] = []
    for prompt in result.prompts:
        pos = prompt.comparisons[key].first_mismatch()
        if pos is not None:
            found.append(("first top-1 mismatch", prompt, pos))
            break
    for why, attr in (("largest KL", "kl"), ("largest |Δlogit|", "abs_max")):
        best: tuple[float, PromptResult, int] | None = None
        for prompt in result.prompts:
            values = getattr(prompt.comparisons[key], attr)
            pos = int(np.argmax(np.nan_to_num(values, nan=np.inf)))
            value = float(np.nan_to_num(values[pos], nan=np.inf))
            if best is None or value > best[0]:
                best = (value, prompt, pos)
        if best is not None and not any(p is best[1] and i == best[2] for _, p, i in found):
            found.append((why, best[1], best[2]))
    return [_point(result, key, why, prompt, pos) for why, prompt, pos in found]


def _point(result: VerifyResult, key: str, why: str, prompt: PromptResult, pos: int) -> Point:
    m = prompt.comparisons[key]
    return Point(
        why=why,
        comparison=key,
        prompt=prompt.prompt.name,
        position=pos,
        in_continuation=pos >= prompt.prompt_len - 1,
        context="".join(prompt.pieces[max(0, pos + 1 - _CONTEXT_TOKENS) : pos + 1]),
        forced=prompt.pieces[pos + 1] if pos + 1 < len(prompt.pieces) else None,
        reference_token=result.token_text(int(m.ref_top[pos])),
        candidate_token=result.token_text(int(m.cand_top[pos])),
        kl=float(m.kl[pos]),
        abs_max=float(m.abs_max[pos]),
        margin=float(m.ref_margin[pos]),
    )


def _ellipsis(text: str, width: int = 40) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def _num(value: float) -> float | None:
    return float(f"{value:.4g}") if math.isfinite(value) else None


def adapter_name(adapter: dict[str, Any]) -> str:
    """``google swiftshader (software fallback)`` from the engine's model info."""
    name = " ".join(str(adapter[k]) for k in ("vendor", "architecture", "description") if adapter.get(k))
    return (name or "an unnamed adapter") + (" (software fallback)" if adapter.get("isFallbackAdapter") else "")


def _keys(result: VerifyResult) -> list[str]:
    return list(result.overall)


def _note(result: VerifyResult, key: str) -> str:
    return GATED_NOTE if key in result.gated else LOSS_NOTE if key.endswith(" vs hf") else DEVICE_NOTE


# ---- terminal ------------------------------------------------------------------------------------------


def _row(name: str, tokens: str, s: Summary) -> str:
    return (
        f"  {name[:16]:<16} {tokens:>9} {s.top1_pct:>7.2f} {s.kl_mean:>9.2g} {s.kl_max:>9.2g} "
        f"{s.abs_max:>9.3g} {s.abs_mean:>9.2g} {f'{s.greedy}/{s.greedy_of}':>8}"
    )


def format_text(result: VerifyResult) -> str:
    """The report for a terminal: references, weights, one table per comparison, where to look, verdict."""
    positions = sum(len(p.token_ids) for p in result.prompts)
    lines = [
        f"verify {result.site}: {result.model_id} in Chromium on {adapter_name(result.adapter)}",
        f"  {len(result.prompts)} prompts, {positions} positions scored, {result.seconds:.0f}s",
        "references:",
    ]
    lines += [f"  {r.name:<5} {r.status:<8} {r.detail}" for r in result.references]
    if result.weights is not None:
        w = result.weights
        lines.append(
            f"weights: all {w.compared} stored tensors equal the source's {result.quantization} quantization"
            if not w.differing
            else f"weights: {len(w.differing)} of {w.compared} stored tensors differ from the source's "
            f"{result.quantization} quantization: " + ", ".join(f"{n} (max |Δ| {d:.3g})" for n, d in w.differing[:5])
        )
    t = result.thresholds
    header = (
        f"  {'prompt':<16} {'tokens':>9} {'top-1 %':>7} {'mean KL':>9} {'max KL':>9} "
        f"{'max |Δ|':>9} {'mean |Δ|':>9} {'greedy':>8}"
    )
    for key in _keys(result):
        lines += ["", f"{key} ({_note(result, key)})", header]
        for p in result.prompts:
            tokens = f"{p.prompt_len}+{len(p.token_ids) - p.prompt_len}"
            lines.append(_row(p.prompt.name, tokens, summarize([p.comparisons[key]])))
        lines.append(_row("all", str(positions), result.overall[key]))
        if key in result.gated:
            lines += [f"  {point.describe()}" for point in divergence_points(result, key)]
    lines += [
        "",
        f"thresholds (browser vs cpu/cuda, pooled): top-1 >= {t.min_top1:g}%, mean KL <= {t.max_kl:g}, "
        f"max |Δlogit| <= {t.max_abs_logit:g}",
    ]
    if result.passed:
        lines.append("PASS: the browser build agrees with the reference build of the same quantization")
    else:
        lines.append("FAIL:")
        lines += [f"  {f}" for f in result.failures]
    return "\n".join(lines)


# ---- JSON ----------------------------------------------------------------------------------------------


def _series(values: np.ndarray) -> list[float | None]:
    return [_num(float(v)) for v in values]


def _comparison_json(m: PositionMetrics) -> dict[str, Any]:
    return summarize([m]).as_dict() | {
        "first_mismatch": m.first_mismatch(),
        "per_position": {
            "top1_agree": [bool(a) for a in m.agree],
            "kl": _series(m.kl),
            "abs_max": _series(m.abs_max),
            "abs_mean": _series(m.abs_mean),
        },
    }


def as_json(result: VerifyResult) -> dict[str, Any]:
    """Everything in the report as plain JSON types (non-finite figures become null)."""
    return {
        "site": str(result.site),
        "model": result.model_id,
        "quantization": result.quantization,
        "adapter": result.adapter,
        "seconds": round(result.seconds, 1),
        "passed": result.passed,
        "failures": result.failures,
        "thresholds": dict(result.thresholds.__dict__),
        "references": [r.as_dict() for r in result.references],
        "weights": result.weights.as_dict() if result.weights is not None else None,
        "overall": {key: s.as_dict() for key, s in result.overall.items()},
        "divergences": [p.as_dict() for key in _keys(result) for p in divergence_points(result, key)],
        "prompts": [
            {
                "name": p.prompt.name,
                "chat": p.prompt.chat,
                "prompt_tokens": p.prompt_len,
                "continuation_tokens": len(p.token_ids) - p.prompt_len,
                "token_ids": p.token_ids,
                "continuation": "".join(p.pieces[p.prompt_len :]),
                "comparisons": {key: _comparison_json(m) for key, m in p.comparisons.items()},
            }
            for p in result.prompts
        ],
    }


# ---- HTML ----------------------------------------------------------------------------------------------

_COLORS = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df")
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;color:#1f2328}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem}h3{font-size:1rem;margin-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.2rem .6rem;border-bottom:1px solid #d0d7de;
text-align:right}td:first-child,th:first-child{text-align:left}.pass{color:#1a7f37}.fail{color:#d1242f}
.badge{display:inline-block;padding:.1rem .6rem;border-radius:1rem;color:#fff;font-weight:600}
.badge.pass{background:#1a7f37}.badge.fail{background:#d1242f}code,.tokens{font-family:ui-monospace,monospace}
.tokens{white-space:pre-wrap;background:#f6f8fa;padding:.5rem;border-radius:6px;font-size:12px}
.tokens .c{background:#ddf4ff}.tokens .x{background:#ffcecb;outline:1px solid #d1242f}svg{display:block}
.note{color:#59636e}table.text td,table.text th{text-align:left}
"""


def _esc(value: object) -> str:
    return html.escape(str(value))


def _summary_table(rows: Sequence[tuple[str, Summary]]) -> str:
    head = "<tr><th></th><th>positions</th><th>top-1 %</th><th>mean KL</th><th>max KL</th><th>max |Δlogit|</th>"
    head += "<th>mean |Δlogit|</th><th>greedy</th></tr>"
    body = "".join(
        f"<tr><td>{_esc(name)}</td><td>{s.positions}</td><td>{s.top1_pct:.2f}</td><td>{s.kl_mean:.3g}</td>"
        f"<td>{s.kl_max:.3g}</td><td>{s.abs_max:.3g}</td><td>{s.abs_mean:.3g}</td>"
        f"<td>{s.greedy}/{s.greedy_of}</td></tr>"
        for name, s in rows
    )
    return f"<table>{head}{body}</table>"


def line_chart(
    series: dict[str, np.ndarray],
    *,
    title: str,
    marks: Sequence[int] = (),
    boundary: int | None = None,
    width: int = 1000,
    height: int = 220,
    floor: float = 1e-9,
) -> str:
    """An inline SVG line chart of positive values by position on a log scale (values below ``floor``, zero
    included, sit on it). ``marks`` are positions to flag; ``boundary`` draws where the continuation starts."""
    left, right, top, bottom = 56, 10, 24, 26
    n = max((len(v) for v in series.values()), default=0)
    finite = [float(x) for v in series.values() for x in v if np.isfinite(x)]
    hi = math.log10(max(max(finite, default=floor), floor * 10))
    lo = math.log10(floor)
    hi = math.ceil(hi)

    def x(i: float) -> float:
        return left + (width - left - right) * (i / max(n - 1, 1))

    def y(value: float) -> float:
        v = math.log10(max(value, floor)) if np.isfinite(value) else hi
        return top + (height - top - bottom) * (1 - (v - lo) / (hi - lo))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        f' role="img" aria-label="{_esc(title)}">',
        f'<text x="{left}" y="15" font-size="12" font-weight="600">{_esc(title)}</text>',
    ]
    for e in range(int(lo), int(hi) + 1, max(1, (int(hi) - int(lo)) // 5)):
        yy = y(10.0**e)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eaeef2"/>')
        parts.append(f'<text x="{left - 4}" y="{yy + 4:.1f}" font-size="10" text-anchor="end">1e{e}</text>')
    step = max(1, round(n / 10))
    for i in range(0, n, step):
        parts.append(f'<text x="{x(i):.1f}" y="{height - 8}" font-size="10" text-anchor="middle">{i}</text>')
    if boundary is not None and n > 1:
        bx = x(boundary)
        parts.append(
            f'<line x1="{bx:.1f}" x2="{bx:.1f}" y1="{top}" y2="{height - bottom}" stroke="#59636e" '
            f'stroke-dasharray="4 3"><title>continuation starts</title></line>'
        )
    for i in marks:
        parts.append(
            f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{top}" y2="{height - bottom}" stroke="#d1242f" '
            f'stroke-width="2" opacity=".5"><title>top-1 mismatch at position {i}</title></line>'
        )
    for color, values in zip(_COLORS, series.values(), strict=False):
        points = " ".join(f"{x(i):.1f},{y(float(v)):.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/>')
    legend_x = width - right - 170 * len(series)
    for k, (color, name) in enumerate(zip(_COLORS, series, strict=False)):
        lx = legend_x + 170 * k
        parts.append(f'<rect x="{lx}" y="6" width="12" height="3" fill="{color}"/>')
        parts.append(f'<text x="{lx + 16}" y="11" font-size="11">{_esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _token_strip(p: PromptResult, key: str | None) -> str:
    """The scored text, one span per token: continuation shaded, top-1 mismatches of ``key`` outlined."""
    wrong = set() if key is None else {int(i) + 1 for i in np.flatnonzero(~p.comparisons[key].agree)}
    spans = []
    for i, piece in enumerate(p.pieces):
        cls = "x" if i in wrong else "c" if i >= p.prompt_len else ""
        attr = f' class="{cls}"' if cls else ""
        tip = f"position {i}; predicted at position {i - 1}" if i else "position 0"
        spans.append(f'<span{attr} title="{tip}">{_esc(piece)}</span>')
    return f'<div class="tokens">{"".join(spans)}</div>'


def format_html(result: VerifyResult) -> str:
    """A self-contained HTML page: verdict, references, summaries, and per prompt the divergence charts."""
    verdict = "pass" if result.passed else "fail"
    keys = _keys(result)
    main_key = next((k for k in keys if k in result.gated), keys[0] if keys else None)
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>webbuild verify: {_esc(result.model_id)}</title><style>{_CSS}</style></head><body>",
        f"<h1>webbuild verify: {_esc(result.model_id)} <span class='badge {verdict}'>{verdict.upper()}</span></h1>",
        f"<p class='note'>Site <code>{_esc(result.site)}</code>; WebGPU adapter {_esc(adapter_name(result.adapter))}; "
        f"{len(result.prompts)} prompts; {result.seconds:.0f}s. Every engine scores the same sequence (prompt + "
        "the CPU reference's greedy continuation) in one teacher-forced pass, so positions align; position i is "
        "the prediction of token i + 1. KL is KL(reference ‖ candidate) over the whole vocabulary.</p>",
    ]
    if result.failures:
        out.append("<ul class='fail'>" + "".join(f"<li>{_esc(f)}</li>" for f in result.failures) + "</ul>")
    t = result.thresholds
    out.append(
        f"<p>Thresholds (browser against the same-quantization builds, pooled over positions): top-1 ≥ "
        f"{t.min_top1:g}%, mean KL ≤ {t.max_kl:g}, max |Δlogit| ≤ {t.max_abs_logit:g}. Comparisons with the "
        "unquantized model (hf) measure quantization loss and are not thresholded.</p>"
    )
    out.append("<h2>References</h2><table class='text'><tr><th>reference</th><th>status</th><th>detail</th></tr>")
    out += [
        f"<tr><td>{_esc(r.name)}</td><td>{_esc(r.status)}</td><td>{_esc(r.detail)}</td></tr>" for r in result.references
    ]
    out.append("</table>")
    if result.weights is not None:
        w = result.weights
        text = (
            f"All {w.compared} stored tensors equal the source quantized afresh."
            if not w.differing
            else f"{len(w.differing)} of {w.compared} stored tensors differ from the source quantized afresh: "
            + ", ".join(f"{n} (max |Δ| {d:.3g})" for n, d in w.differing[:10])
        )
        out.append(f"<p class='{'pass' if not w.differing else 'fail'}'>Weights: {_esc(text)}</p>")
    out.append("<h2>Overall</h2>")
    out.append(_summary_table([(k, s) for k, s in result.overall.items()]))
    for key in keys:
        points = divergence_points(result, key)
        if points:
            out.append(f"<h3>{_esc(key)}: where to look</h3><ul>")
            out += [f"<li>{_esc(p.describe())}</li>" for p in points]
            out.append("</ul>")
    for p in result.prompts:
        out.append(f"<h2>Prompt {_esc(p.prompt.name)}</h2>")
        out.append(
            f"<p class='note'>{p.prompt_len} prompt tokens + {len(p.token_ids) - p.prompt_len} continuation "
            f"tokens{' (chat template)' if p.prompt.chat else ''}.</p>"
        )
        out.append(_summary_table([(k, summarize([m])) for k, m in p.comparisons.items()]))
        marks = [] if main_key is None else [int(i) for i in np.flatnonzero(~p.comparisons[main_key].agree)]
        boundary = p.prompt_len - 1
        kl = {k: m.kl for k, m in p.comparisons.items()}
        dl = {k: m.abs_max for k, m in p.comparisons.items()}
        out.append(line_chart(kl, title="KL(reference ‖ candidate) by position", marks=marks, boundary=boundary))
        out.append(line_chart(dl, title="max |Δlogit| by position", marks=marks, boundary=boundary, floor=1e-6))
        out.append(_token_strip(p, main_key))
    out.append("</body></html>")
    return "\n".join(out)


def write_html(result: VerifyResult, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_html(result), encoding="utf-8")
    return path
