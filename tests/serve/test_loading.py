"""webbuild.serve.loading: the engine loads in a daemon thread, says how it went, and compiles in a child process."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from fake_engine import FakeEngine

from webbuild import _log
from webbuild.errors import EngineUnavailableError, InputError
from webbuild.serve.loading import RETRY_AFTER_S, EngineLoader, load_engine


def started(loader: EngineLoader) -> EngineLoader:
    """``loader`` started with a reporter that prints, as the CLI runs it."""
    with _log.reporting(_log.Reporter(enabled=True)):
        loader.start()
    return loader


def test_until_the_engine_is_loaded_get_says_it_is_loading(capsys: pytest.CaptureFixture[str]) -> None:
    release, engine = threading.Event(), FakeEngine()
    loader = started(EngineLoader(lambda: release.wait(30) and engine, "the test engine"))
    with pytest.raises(EngineUnavailableError) as loading:
        loader.get()
    assert (loading.value.status, loading.value.code) == (503, "model_loading")
    assert loading.value.retry_after == RETRY_AFTER_S
    assert loader.metrics() == {}  # no engine gauges yet
    release.set()
    assert loader.done.wait(10)
    assert loader.get() is engine and loader.metrics() == engine.metrics()
    err = capsys.readouterr().err  # the thread reports through the reporter of whoever started it
    assert "* loading the test engine" in err
    assert "* engine ready (" in err and "fake-model-q4f32_1" in err


def test_the_loading_thread_does_not_keep_the_process_alive() -> None:
    release = threading.Event()
    thread = EngineLoader(lambda: release.wait(30) and FakeEngine()).start()
    assert thread.daemon and thread.is_alive()
    release.set()


def test_a_failed_load_names_its_error_once(capsys: pytest.CaptureFixture[str], caplog) -> None:
    def load() -> FakeEngine:
        raise InputError("dist/x has no q4f16_1 build; it has q4f32_1", tip="Drop -q to serve the default build.")

    loader = started(EngineLoader(load, "the test engine"))
    assert loader.done.wait(10)
    for _ in range(3):
        with pytest.raises(EngineUnavailableError) as failed:
            loader.get()
        assert failed.value.code == "model_load_failed" and failed.value.retry_after is None
        assert "has no q4f16_1 build" in failed.value.message
    assert loader.failure == "dist/x has no q4f16_1 build; it has q4f32_1"
    err = capsys.readouterr().err
    assert err.count("failed to load: dist/x has no q4f16_1 build") == 1
    assert "* tip: Drop -q" in err
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # a user error: no traceback


def test_an_unexpected_load_error_logs_its_traceback_and_clients_get_its_class(caplog) -> None:
    def load() -> FakeEngine:
        raise RuntimeError("/secret/path exploded")

    loader = EngineLoader(load)
    with caplog.at_level(logging.ERROR, logger="webbuild.serve"):
        loader.start()
        assert loader.done.wait(10)
    assert loader.failure == "RuntimeError (details in the server log)"
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info and "/secret/path exploded" in str(record.exc_info[1])


@pytest.mark.toolchain
def test_load_engine_compiles_in_a_child_process(
    cache_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tiny_llama import tiny_llama_model, write_hf_dir

    def no_compiling_here(*args: object, **kwargs: object) -> None:
        raise AssertionError("compiled in the server's process")

    monkeypatch.setattr("webbuild.build.library.compile_module", no_compiling_here)  # the child imports its own
    model = write_hf_dir(tmp_path / "tiny", tiny_llama_model())
    engine = load_engine(str(model), device="cpu", quantization="q0f32", mode="interactive")
    assert list((cache_home / "libs" / "cpu").glob("*.so"))
    reply = engine.completions.create(prompt="The capital", max_tokens=3, temperature=0)
    assert reply["usage"]["completion_tokens"] == 3
