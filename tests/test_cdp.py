"""webbuild.cdp: headless Chromium over the DevTools pipe, without Playwright."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from webbuild.browser import chromium_args, find_chromium
from webbuild.cdp import Chromium
from webbuild.errors import ToolchainError, WebbuildError

pytestmark = pytest.mark.toolchain


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    with Chromium(find_chromium(), chromium_args()) as browser:
        yield browser


def test_evaluate_returns_values_and_awaits_promises(chromium: Chromium) -> None:
    page = chromium.open("data:text/html,<title>cdp</title><p>hi</p>")
    page.wait_for("document.readyState === 'complete'", timeout_s=30)
    assert page.evaluate("document.title") == "cdp"
    assert page.evaluate("new Promise((resolve) => setTimeout(() => resolve({a: [1, 'x']}), 50))") == {"a": [1, "x"]}


def test_a_thrown_error_is_raised_with_its_message(chromium: Chromium) -> None:
    page = chromium.open("about:blank")
    with pytest.raises(WebbuildError, match="the page threw: Error: boom"):
        page.evaluate("(async () => { throw new Error('boom'); })()")


def test_uncaught_errors_and_console_errors_are_collected(chromium: Chromium) -> None:
    page = chromium.open("about:blank")
    page.evaluate("console.error('bad', 3); setTimeout(() => { throw new Error('later'); }, 0); 1")
    deadline = time.monotonic() + 10
    while len(page.errors()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    errors = page.errors()
    assert errors[0] == "bad 3" and errors[1].startswith("Error: later")


def test_a_wait_that_never_comes_true_times_out(chromium: Chromium) -> None:
    page = chromium.open("about:blank")
    with pytest.raises(WebbuildError, match="did not reach"):
        page.wait_for("false", timeout_s=0.5, poll_s=0.1)


def test_a_browser_that_exits_at_once_is_a_toolchain_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken-chrome"
    broken.write_text("#!/bin/sh\necho 'missing libnss3.so' >&2\nexit 127\n")
    broken.chmod(0o755)
    with pytest.raises(ToolchainError, match="missing libnss3.so"):
        with Chromium(broken, []):
            pass
