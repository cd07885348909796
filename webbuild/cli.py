"""Command line: parses arguments, runs one command, prints its result; the only place that prints or exits."""

from __future__ import annotations

import argparse
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from webbuild import _log
from webbuild.build.presets import preset_names
from webbuild.errors import InputError, WebbuildError

EXAMPLES = """examples:
  webbuild package smollm2-135m-instruct          build dist/smollm2-135m-instruct/ (a static site)
  webbuild package ./model.gguf -q q4f32_1 -q q4f16_1
  webbuild serve dist/smollm2-135m-instruct       serve it on http://127.0.0.1:8000/
  webbuild chat smollm2-135m-instruct             chat with it in the terminal (Python engine)
  webbuild verify dist/smollm2-135m-instruct      check the browser build against CPU / HF references
  webbuild doctor                                 check the toolchain
"""


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


# ---- option values: checked while parsing (exit 2, argparse's usage error), so a typo never waits for a load.
# Nothing here imports TVM: `webbuild package x -q q8` fails in a fraction of a second.


def _bounded(
    kind: type[int] | type[float], low: float, high: float | None = None, *, above: bool = False
) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` from ``low`` to ``high`` (strictly more than ``low`` with ``above``)."""
    word = "an integer" if kind is int else "a number"
    want = (
        f"{word} from {low:g} to {high:g}"
        if high is not None
        else f"{word} {'above' if above else 'of at least'} {low:g}"
    )

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = float("nan")
        if not ((value > low if above else value >= low) and (high is None or value <= high)):  # NaN never is
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return value

    return convert


_POSITIVE_INT = _bounded(int, 1)


def _quantization(text: str) -> str:
    from webbuild.build.quantize import QUANTIZATIONS

    if text not in QUANTIZATIONS:
        raise argparse.ArgumentTypeError(f"unknown quantization {text!r}; choose among {', '.join(QUANTIZATIONS)}")
    return text


def _embeddings(text: str) -> str:
    from webbuild.build.quantize import EMBEDDING_CHOICES

    if text not in EMBEDDING_CHOICES:
        raise argparse.ArgumentTypeError(f"unknown layout {text!r}; choose among {', '.join(EMBEDDING_CHOICES)}")
    return text


def _names(*allowed: str) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated, non-empty list of ``allowed`` names."""

    def convert(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        if not names or any(n not in allowed for n in names):
            raise argparse.ArgumentTypeError(f"{text!r}: choose among {', '.join(allowed)}")
        return names

    return convert


def _origins(text: str) -> list[str]:
    """Comma-separated CORS origins, each ``*`` or ``scheme://host[:port]`` exactly as browsers send it: an origin
    written with a path or a trailing slash would never match and fail silently."""
    origins = [o.strip() for o in text.split(",") if o.strip()]
    for origin in origins:
        parts = urlsplit(origin)
        if origin != "*" and not (parts.scheme and parts.netloc and origin == f"{parts.scheme}://{parts.netloc}"):
            raise argparse.ArgumentTypeError(
                f"{origin!r} is not an origin: write scheme://host[:port] (e.g. https://example.com, no path or "
                "trailing slash) or '*'"
            )
    return origins


def _hosts(text: str) -> list[str]:
    """Comma-separated host names for the Host check: ``name``, ``*.domain`` or ``*``, without scheme or port."""
    hosts = [h.strip().lower() for h in text.split(",") if h.strip()]
    for host in hosts:
        name = host.removeprefix("*.")
        if host != "*" and not re.fullmatch(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?", name):
            raise argparse.ArgumentTypeError(
                f"{host!r} is not a host name: write e.g. llm.example.com or *.example.com (no scheme, port or path)"
            )
    return hosts


# ---- what options name: checked before a command starts work (exit 1 with error/tip, like load failures).


def _check_model(spec: str, *, sites: bool, param: str = "model") -> None:
    """A model spec names an existing file or folder, or a preset; what it holds is checked when it loads."""
    from webbuild.build.presets import preset_names

    if Path(spec).expanduser().exists() or spec in preset_names():
        return
    site = ", or a folder `webbuild package` wrote" if sites else ""
    raise InputError(
        f"{spec}: no such file or folder, and no preset of that name (presets: {', '.join(preset_names()) or 'none'})",
        tip=f"Give a preset name, a .gguf file or a Hugging Face model folder (config.json, *.safetensors){site}.",
        param=param,
    )


def _check_site(path: Path) -> None:
    from webbuild.site_format import is_site

    if not is_site(path):
        raise InputError(
            f"{path} is not a built site (no index.html and manifest.json)",
            tip="Build one with `webbuild package <model>`.",
            param="site",
        )


def cmd_package(args: argparse.Namespace) -> int:
    _check_model(args.model, sites=False)
    from webbuild.commands.package import PackageOptions, package

    result = package(
        PackageOptions(
            model=args.model,
            out=args.out,
            quantizations=list(dict.fromkeys(args.quantization or [])),  # a repeated -q builds once
            context_window_size=args.context_window_size,
            prefill_chunk_size=args.prefill_chunk_size,
            dump_ir=args.dump_ir,
            embeddings=args.embeddings,
        )
    )
    print(f"built {result.site} in {result.seconds:.0f}s")
    for part, size in sorted(result.parts.items()):
        print(f"  {part:<10} {_size(size):>10}")
    print(f"  {'total':<10} {_size(sum(result.parts.values())):>10}")
    for variant, lines in result.quantization.items():
        print(f"weights of {variant}, {lines[0]}")
        for line in lines[1:]:
            print(f"  {line}")
    print(f"serve it with: webbuild serve {result.site}   (or upload the folder to any static host)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    if not args.no_api:  # without the API, serve() itself refuses anything but a site, at once
        _check_model(args.model, sites=True)
    from webbuild.commands.serve import ServeOptions, serve

    serve(
        ServeOptions(
            model=args.model,
            device=args.device,
            mode=args.mode,
            prefix_cache=not args.no_prefix_cache,
            host=args.host,
            port=args.port,
            api=not args.no_api,
            api_key=args.api_key or os.environ.get("WEBBUILD_API_KEY") or None,
            allow_origins=[o for group in args.allow_origins or [] for o in group],
            allowed_hosts=[h for group in args.allowed_hosts or [] for h in group],
            cross_origin_isolation=args.cross_origin_isolation,
            quantization=args.quantization,
            log_level="info" if args.verbose else "warning",
        )
    )
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from webbuild.commands.doctor import doctor, format_report

    checks = doctor(build_runtime=args.build_runtime)
    print(format_report(checks))
    return 0 if all(c.ok for c in checks) else 3


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    _check_site(args.site)
    from webbuild.browser import BrowserChoice, find_chromium
    from webbuild.commands.bench import BenchOptions, RunFailure, RunFigures, bench_all, format_profile, format_runs

    options = BenchOptions(
        prompt=args.prompt,
        max_tokens=args.max_tokens,
        repeat=args.repeat,
        browser=BrowserChoice(args.browser, tuple(args.browser_flag)),
        profile=args.profile,
    )
    if "browser" in args.engines:
        find_chromium(options.browser.executable)  # a browser that is not there fails before any engine runs
    results = bench_all(args.site, args.engines, options)
    failed = any(isinstance(r, RunFailure) for r in results)
    if args.out:
        args.out.write_text(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
        return 1 if failed else 0
    print(format_runs(results))
    for r in results:
        if isinstance(r, RunFigures) and r.profile:
            print(format_profile(r.profile))
    return 1 if failed else 0


def cmd_chat(args: argparse.Namespace) -> int:
    from webbuild.commands.chat import ChatOptions, Settings, chat

    settings = Settings(
        temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, seed=args.seed, stop=args.stop
    ).validated()  # the ranges of the request contract (REST, browser, chat), before the model loads
    chat(ChatOptions(args.model, args.device, args.quantization, settings, args.system))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    import json

    _check_site(args.site)
    if args.prompts is not None and not args.prompts.is_file():
        raise InputError(f"--prompts: no such file: {args.prompts}", param="prompts")
    if args.source is not None:
        _check_model(args.source, sites=False, param="source")
    from webbuild.commands.verify import VerifyOptions, verify
    from webbuild.verify.metrics import Thresholds
    from webbuild.verify.report import as_json, format_text, write_html

    result = verify(
        VerifyOptions(
            site=args.site,
            prompts=args.prompts,
            references=args.reference,
            tokens=args.tokens,
            source=args.source,
            quantization=args.quantization,
            thresholds=Thresholds(args.min_top1, args.max_kl, args.max_abs_logit),
            load_timeout_s=args.timeout,
        )
    )
    if args.html:
        print(f"HTML report: {write_html(result, args.html)}", file=sys.stderr)
    print(json.dumps(as_json(result), indent=2) if args.json else format_text(result))
    return 0 if result.passed else 1


class _Version(argparse.Action):
    """``--version``: looked up only when asked (finding the installed distribution takes a quarter second)."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        import webbuild

        print(f"webbuild {webbuild.__version__}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="webbuild",
        description="Compile a language model with Apache TVM into a static WebGPU chat site, and serve it.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show details and full tracebacks")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "package",
        help="build a static chat site for a model",
        description="Quantize a model, compile it for WebGPU with TVM, link it with emscripten and write a "
        "static site (index.html, runtime, weights, model library, manifest.json) that runs the model in "
        "the visitor's browser. Compiled libraries are cached, so rebuilding is fast.",
    )
    p.add_argument(
        "model",
        help=f"a preset ({', '.join(preset_names()) or 'none installed'}), a .gguf file or a "
        "Hugging Face directory (config.json, *.safetensors, tokenizer.json, tokenizer_config.json)",
    )
    p.add_argument("-o", "--out", type=Path, help="output folder (default: dist/<model>)")
    p.add_argument(
        "-q",
        "--quantization",
        action="append",
        type=_quantization,
        metavar="SCHEME",
        help="q4f32_m (default: 4-bit weights with a scale and minimum per group, 8-bit embeddings; keeps a "
        "GGUF's Q4_0/Q4_1/Q8_0 weights exactly; runs on every WebGPU adapter), q8f32_s (8-bit), q4f32_1 "
        "(MLC/WebLLM's symmetric 4-bit), q0f32 (unquantized); q4f16_m, q8f16_s, q4f16_1 and q0f16 are their "
        "f16 forms (smaller activations, need shader-f16); repeat to put several builds in one site",
    )
    p.add_argument(
        "--embeddings",
        type=_embeddings,
        metavar="LAYOUT",
        help="how to store the embedding table and the output head: q8 (default of the q4*_m schemes), q4m, q4, "
        "or float (the model's dtype); overrides the scheme's choice",
    )
    p.add_argument("--context-window-size", type=_POSITIVE_INT, metavar="N", help="maximum tokens per conversation")
    p.add_argument("--prefill-chunk-size", type=_POSITIVE_INT, metavar="N", help="maximum tokens per prefill step")
    p.add_argument("--dump-ir", type=Path, metavar="DIR", help="write the compiled IR to DIR for debugging")
    p.set_defaults(func=cmd_package)

    p = sub.add_parser(
        "serve",
        help="serve a built site and an OpenAI-compatible REST API",
        description="Serve a site built by `webbuild package` (static files with caching, ranges, gzip) and "
        "the OpenAI REST API (/v1/chat/completions, /v1/completions, /v1/models, /health, /metrics) on the "
        "Python engine. Given a model spec instead of a site, serve the API only.",
    )
    p.add_argument(
        "model", help="the folder `webbuild package` wrote, or a preset name / .gguf file / Hugging Face directory"
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the engine runs (default cpu)")
    p.add_argument(
        "--mode",
        choices=["local", "interactive", "server"],
        default="local",
        help="engine limits: local (default) runs 4 requests at once, interactive 1, server 16 with a KV cache "
        "of 8 context windows; the rest queue",
    )
    p.add_argument(
        "--no-prefix-cache",
        action="store_true",
        help="free a request's KV cache when it ends instead of keeping it for later prompts that start the same "
        "way (the next turn of a chat then prefills the whole conversation again)",
    )
    p.add_argument(
        "-q",
        "--quantization",
        type=_quantization,
        metavar="SCHEME",
        help="which build of a site, or how to quantize a model",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_bounded(int, 1, 65535), default=8000, help="port (default 8000)")
    p.add_argument(
        "--api-key", metavar="KEY", help="require `Authorization: Bearer KEY` on /v1 (default: $WEBBUILD_API_KEY)"
    )
    p.add_argument(
        "--allow-origins",
        action="append",
        type=_origins,
        metavar="ORIGINS",
        help="comma-separated origins whose pages may call the server (CORS), e.g. https://example.com, or '*'; "
        "repeatable; default: same origin only",
    )
    p.add_argument(
        "--allowed-hosts",
        action="append",
        type=_hosts,
        metavar="HOSTS",
        help="comma-separated host names the server answers to besides localhost, IP addresses and (with --host "
        "0.0.0.0) this machine's name, e.g. llm.example.com or *.example.com, or '*'; repeatable (Host header "
        "check against DNS rebinding)",
    )
    p.add_argument(
        "--cross-origin-isolation",
        action="store_true",
        help="send COOP/COEP headers with the site (needed for SharedArrayBuffer / threaded wasm)",
    )
    p.add_argument("--no-api", action="store_true", help="serve the site's files only, without loading the engine")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "doctor",
        help="check the toolchain",
        description="Report TVM, emcc, the wasm runtime, node/npm, Chromium and its WebGPU adapter, "
        "each with how to fix it when missing. Exits 3 when something is missing.",
    )
    p.add_argument(
        "--build-runtime", action="store_true", help="also build TVM's wasm runtime now (~2 min once; cached)"
    )
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser(
        "bench",
        help="measure a built site: load time, time to first token, tokens/s",
        description="Run one greedy chat request through the site in headless Chromium (WebGPU) and through "
        "the Python engine (CPU, or CUDA on a GPU machine) on the same files, and print load time, time to first "
        "token and prefill/decode tokens/s side by side. The browser's row names its WebGPU adapter: the "
        "software one of a GPU-less machine runs at CPU speed.",
    )
    p.add_argument("site", type=Path, help="the folder `webbuild package` wrote")
    p.add_argument("--prompt", default="Write one sentence about the sea.", help="the user message")
    p.add_argument("--max-tokens", type=_POSITIVE_INT, default=8, help="tokens to generate (default 8)")
    p.add_argument(
        "--repeat",
        type=_POSITIVE_INT,
        default=3,
        help="timed requests after a warm-up; figures are medians (default 3)",
    )
    p.add_argument(
        "--engines",
        default="cpu,browser",
        type=_names("cpu", "cuda", "browser"),
        help="comma-separated among cpu, cuda, browser (default cpu,browser)",
    )
    p.add_argument(
        "--browser", type=Path, metavar="PATH", help="the Chromium executable (default: $WEBBUILD_CHROMIUM, Debian's)"
    )
    p.add_argument(
        "--browser-flag",
        action="append",
        default=[],
        metavar="FLAG",
        help="an extra Chromium flag, repeatable: e.g. --browser-flag=--use-angle=vulkan for a GPU's Vulkan driver",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also profile one prefill chunk and decode steps in the browser: dispatches by kernel, GPU time, "
        "read-back, sampling, worker messaging",
    )
    p.add_argument("--out", type=Path, metavar="FILE", help="also write the figures as JSON to FILE")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "chat",
        help="chat with a model in the terminal (Python engine, CPU or CUDA)",
        description="Load a model on the Python engine and chat with it in the terminal; replies stream as "
        "they are generated. Type /help in the chat for its commands: /stats (prefill and decode tokens/s of "
        "the last reply), /reset, /set temperature=0.5;top_p=0.9;max_tokens=100;stop=a,b, /exit (or Ctrl-D). "
        'End a line with \\ to continue it, or put a multi-line message between """ lines. Ctrl-C stops '
        "a reply and keeps the chat. The first load of a model compiles it for the device (cached).",
    )
    p.add_argument(
        "model",
        help="a folder `webbuild package` wrote, a preset name (e.g. smollm2-135m-instruct), a .gguf file or a "
        "Hugging Face directory",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the model runs (default cpu)")
    p.add_argument(
        "-q",
        "--quantization",
        type=_quantization,
        metavar="SCHEME",
        help="e.g. q4f32_m, q4f32_1, q0f32 (default: the site's default build; a model: its preset's, else q4f32_m)",
    )
    p.add_argument(
        "--temperature", type=float, metavar="T", help="sampling temperature, 0-2; 0 is greedy (default: the model's)"
    )
    p.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling mass, 0-1 (default: the model's)")
    p.add_argument(
        "--max-tokens", type=int, metavar="N", help="most tokens per reply (default: up to the context window)"
    )
    p.add_argument("--seed", type=int, metavar="N", help="sampling seed, for repeatable replies")
    p.add_argument(
        "--stop", action="append", default=[], metavar="TEXT", help="end a reply at TEXT (repeat for up to 4)"
    )
    p.add_argument("--system", metavar="TEXT", help="a system prompt; /reset keeps it")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser(
        "verify",
        help="check the browser (WebGPU) build against CPU, CUDA and Hugging Face references",
        description="Run prompts through the site's own runtime in headless Chromium and through reference "
        "engines, and compare the logits at every position. Each prompt is extended by the CPU reference's "
        "greedy continuation and scored in one teacher-forced pass by every engine, so positions align. "
        "References: cpu (llvm build of the same quantization, weights quantized afresh from the source "
        "model), cuda (the same on a GPU, when present), hf (transformers on the unquantized weights, when "
        "torch is installed: quantization loss). Reports top-1 agreement, mean KL(reference || browser), "
        "max and mean |logit difference| and the identical greedy continuation, per prompt and overall. "
        "Exits 1 when the browser crosses a threshold against the same-quantization references. The built-in "
        "prompts score about 900 tokens: seconds on a GPU, 15 minutes or more on a software WebGPU adapter.",
    )
    p.add_argument("site", type=Path, help="the folder `webbuild package` wrote")
    p.add_argument(
        "--prompts",
        type=Path,
        metavar="FILE",
        help="prompts to run instead of the built-in set: one per line, or JSON / JSON lines of strings or "
        '{"name", "text", "chat": true|false} objects',
    )
    p.add_argument(
        "--reference",
        default="cpu,cuda,hf",
        type=_names("cpu", "cuda", "hf"),
        metavar="LIST",
        help="comma-separated references among cpu, cuda, hf (default cpu,cuda,hf; unavailable ones are skipped)",
    )
    p.add_argument(
        "--tokens", type=_POSITIVE_INT, default=16, metavar="N", help="greedy continuation tokens per prompt (16)"
    )
    p.add_argument(
        "--source",
        metavar="MODEL",
        help="the unquantized model the site was built from (preset, .gguf or HF directory); default: the "
        "manifest's model name when it is a preset",
    )
    p.add_argument(
        "-q",
        "--quantization",
        type=_quantization,
        metavar="SCHEME",
        help="which build of the site (default: the page's)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--html", type=Path, metavar="FILE", help="also write a self-contained HTML report with charts")
    p.add_argument(
        "--min-top1",
        type=_bounded(float, 0, 100),
        default=99.0,
        metavar="PCT",
        help="least top-1 agreement, %% (default 99)",
    )
    p.add_argument(
        "--max-kl",
        type=_bounded(float, 0),
        default=1e-3,
        metavar="X",
        help="largest mean KL divergence, nats (default 1e-3)",
    )
    p.add_argument(
        "--max-abs-logit",
        type=_bounded(float, 0),
        default=0.05,
        metavar="X",
        help="largest |logit difference| (default 0.05)",
    )
    p.add_argument(
        "--timeout",
        type=_bounded(float, 0, above=True),
        default=1800,
        metavar="S",
        help="seconds to wait for the page to load the model",
    )
    p.set_defaults(func=cmd_verify)
    return parser


def _report(exc: WebbuildError) -> int:
    print(f"error: {exc.message}", file=sys.stderr)
    if exc.tip:
        print(f"tip: {exc.tip}", file=sys.stderr)
    return exc.exit_code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rep = _log.Reporter(enabled=not args.quiet, verbose=args.verbose)
    try:
        with _log.reporting(rep):
            return args.func(args)
    except WebbuildError as exc:
        return _report(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a disk that is read-only, full or not ours: the path and what to do, not a bug
        from webbuild.cache import filesystem_error

        return _report(filesystem_error(exc))
    except Exception as exc:  # a bug: one line unless asked for the traceback
        if args.verbose:
            traceback.print_exc()
        else:
            print(f"internal error: {type(exc).__name__}: {exc} (re-run with -v for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
