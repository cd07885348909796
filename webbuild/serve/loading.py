"""The engine behind the API, loaded in the background so ``webbuild serve`` answers as soon as it starts.

Loading imports TVM and, on a machine's first start, compiles the model for its CPU (minutes), so it runs in
a daemon thread: the event loop keeps serving the site and ``/health`` meanwhile, and Ctrl-C stops the server
without waiting for the compile to end. Until the engine is ready the API answers 503 with ``Retry-After``;
after a failed load, 503 naming the error.

The compile itself runs in a child process (``load_engine``). In a thread of the server it would hold TVM's
C++ frames under Python callbacks, which an exiting interpreter cannot unwind (Ctrl-C then ends in an abort or
a segfault), and it redirects the process's stdout and stderr while it runs (``compile._fd_output``).
"""

from __future__ import annotations

import contextvars
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from webbuild import _log
from webbuild.errors import BuildError, EngineUnavailableError, WebbuildError

if TYPE_CHECKING:
    from webbuild.build.arch.config import DecoderConfig
    from webbuild.build.quantize import QuantScheme
    from webbuild.engine.engine import Engine
    from webbuild.serve.routes import EngineLike

log = logging.getLogger("webbuild.serve")
RETRY_AFTER_S = 10  # a compile takes minutes; clients polling faster only add load


class EngineLoader:
    """Holds the API's engine: ``get()`` returns it once ``load()`` has returned it, and raises
    EngineUnavailableError while it runs or after it failed. ``what`` names the engine in progress messages."""

    def __init__(self, load: Callable[[], EngineLike], what: str = "the engine") -> None:
        self._load = load
        self.what = what
        self.engine: EngineLike | None = None
        self.failure: str | None = None  # the load error, as clients and the terminal see it
        self.done = threading.Event()

    @classmethod
    def loaded(cls, engine: EngineLike) -> EngineLoader:
        """One whose engine is there already (an app built around an engine in hand)."""
        loader = cls(lambda: engine)
        loader.engine = engine
        loader.done.set()
        return loader

    def start(self, after: Callable[[], bool] = lambda: True) -> threading.Thread:
        """Loads in a daemon thread, so the process can exit during a compile, once ``after()`` is true (polled);
        the thread runs in a copy of the caller's context, so its progress reaches the caller's ``_log`` reporter."""
        run = contextvars.copy_context().run
        thread = threading.Thread(target=run, args=(self._run, after), name="webbuild-engine-load", daemon=True)
        thread.start()
        return thread

    def _run(self, after: Callable[[], bool]) -> None:
        while not after():
            time.sleep(0.01)
        _log.step(f"loading {self.what} (on a machine's first start this compiles it: minutes)")
        t0 = time.monotonic()
        try:
            self.engine = self._load()
        except Exception as exc:
            if not threading.main_thread().is_alive():
                return  # the server is exiting and stopped the compile with it: nothing broke, nobody to tell
            if isinstance(exc, WebbuildError):
                self.failure = exc.message
                _log.step(f"{self.what} failed to load: {exc.message}")
                if exc.tip:
                    _log.step(f"tip: {exc.tip}")
            else:  # a bug: clients get its class, the server log its traceback (as for a failed request)
                self.failure = f"{type(exc).__name__} (details in the server log)"
                _log.step(f"{self.what} failed to load: {type(exc).__name__}: {exc}")
                log.error("%s failed to load", self.what, exc_info=exc)
        else:
            _log.step(f"engine ready ({time.monotonic() - t0:.1f} s): {self.engine.model_name}")
        finally:
            self.done.set()

    def get(self) -> EngineLike:
        if self.engine is not None:
            return self.engine
        if self.failure is not None:
            raise EngineUnavailableError(f"The model failed to load: {self.failure}", failed=True)
        raise EngineUnavailableError(
            "The model is still loading (the server's first start compiles it, which can take minutes); "
            f"retry in {RETRY_AFTER_S} s or watch GET /health.",
            retry_after=RETRY_AFTER_S,
        )

    def metrics(self) -> dict[str, Any]:
        """The engine's gauges once it is loaded; none before."""
        return self.engine.metrics() if self.engine is not None else {}


def load_engine(model: str, *, device: str, quantization: str | None, mode: str, prefix_cache: bool = True) -> Engine:
    """The engine for ``model`` (a site or a model spec), its library compiled (or found cached) in a child
    process; ``mode`` sets the engine's limits (``engine.MODES``), ``prefix_cache`` whether finished requests'
    KV stays for later prompts."""
    from webbuild.engine.engine import Engine, EngineConfig, load_prepared

    prepared = load_prepared(model, quantization)
    _build_in_child(prepared.cfg, prepared.scheme, device)
    config = EngineConfig(mode=mode, prefix_cache=prefix_cache)
    return Engine(prepared, device, config=config)  # finds the library in the cache


def _build_in_child(cfg: DecoderConfig, scheme: QuantScheme, device: str) -> None:
    # spawn, not fork: a fork would copy the locks the server's other threads hold. A daemon child is
    # terminated when this process exits, so Ctrl-C never waits for the compile.
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(
        target=_build, args=(cfg, scheme, device, _log.reporter(), send), name="webbuild-compile", daemon=True
    )
    child.start()
    send.close()
    try:
        wait([receive, child.sentinel])  # its answer, or its end without one
        error = receive.recv()
    except EOFError:  # it ended without answering: the exit code tells
        error = None
    finally:
        receive.close()
    child.join()
    if error is not None:
        raise error
    if child.exitcode != 0:
        raise BuildError(
            f"The process compiling the {device} library ended with exit code {child.exitcode}.",
            tip="Its output above says why; run `webbuild chat <model>` to compile in the foreground.",
        )


def _build(cfg: DecoderConfig, scheme: QuantScheme, device: str, reporter: _log.Reporter, send: Connection) -> None:
    """In the child: compiles the library into the cache; sends None, or the WebbuildError that stopped it
    (an unexpected error prints its traceback and ends the child with exit code 1)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's: it ends this process as it exits
    from webbuild.build.library import build_library
    from webbuild.cache import filesystem_error

    error = None
    try:
        with _log.reporting(reporter):
            build_library(cfg, scheme, device)
    except WebbuildError as exc:
        error = exc
    except OSError as exc:  # the cache's disk: named, with what to do, like the CLI does
        error = filesystem_error(exc)
    send.send(error)
