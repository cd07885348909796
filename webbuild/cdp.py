"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): open a page,
evaluate JavaScript, await its promises, collect its errors.

Only the standard library, so ``webbuild bench`` runs where Playwright is not installed: the GPU machine,
with Debian's ``chromium-headless-shell`` and its libraries carried over. Chromium reads commands from
file descriptor 3 and writes replies and events to 4, each a JSON object ended by a NUL byte.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from webbuild.errors import ToolchainError, WebbuildError

_STDERR_TAIL = 4000  # bytes of Chromium's stderr kept for error messages


def _above_4(fd: int) -> int:
    """The same pipe end on a descriptor above 4, so that moving it to 3 or 4 cannot clobber another."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5)
    os.close(fd)
    return high


class Chromium:
    """One headless Chromium with a fresh profile, for the ``with`` block. ``open(url)`` gives a Page."""

    def __init__(self, executable: Path, args: Sequence[str], *, env: dict[str, str] | None = None) -> None:
        self.executable = executable
        self.args = list(args)
        self.env = env
        self._profile = Path(tempfile.mkdtemp(prefix="webbuild-chromium-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._to_browser: int | None = None
        self._next_id = 0
        self._lock = threading.Lock()
        self._replies: dict[int, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._stderr = b""
        self._closed = False

    def __enter__(self) -> Chromium:
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        to_browser_r, from_browser_w = _above_4(to_browser_r), _above_4(from_browser_w)
        cmd = [str(self.executable), *self.args, f"--user-data-dir={self._profile}", "--remote-debugging-pipe"]
        # Chromium's end of the pipes must be fds 3 and 4: bash moves them there, then execs it (dash, Debian's
        # sh, reads no descriptor above 9).
        wire = f'exec "$0" "$@" 3<&{to_browser_r} {to_browser_r}<&- 4>&{from_browser_w} {from_browser_w}>&-'
        try:
            self._proc = subprocess.Popen(
                ["/bin/bash", "-c", wire, *cmd, "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(to_browser_r, from_browser_w),
                env=self.env,
                start_new_session=True,
            )
        except OSError as exc:
            shutil.rmtree(self._profile, ignore_errors=True)
            raise ToolchainError(f"{self.executable} could not be started: {exc}") from exc
        finally:
            os.close(to_browser_r)
            os.close(from_browser_w)
        self._to_browser = to_browser_w
        threading.Thread(target=self._read_replies, args=(from_browser_r,), daemon=True).start()
        self._stderr_reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_reader.start()
        self.call("Target.setDiscoverTargets", {"discover": True}, timeout_s=60)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._proc is not None:
            try:
                self.call("Browser.close", timeout_s=5)
            except WebbuildError:
                pass
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._to_browser is not None:
            os.close(self._to_browser)
        shutil.rmtree(self._profile, ignore_errors=True)

    def open(self, url: str) -> Page:
        """A new tab at ``url``, attached (its console errors and uncaught exceptions are collected)."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        self.call("Runtime.enable", session=session)
        self.call("Page.enable", session=session)
        self.call("Page.navigate", {"url": url}, session=session)
        return page

    # ---- the wire ------------------------------------------------------------------------------------

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None, timeout_s: float = 30
    ) -> dict[str, Any]:
        """Sends one command and waits for its reply; raises WebbuildError with the protocol's message."""
        with self._lock:
            self._next_id += 1
            ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        if self._to_browser is None:
            raise ToolchainError("Chromium is not running")
        try:
            os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        except OSError as exc:
            raise self._died(f"{method}: {exc}") from exc
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while ident not in self._replies:
                left = deadline - time.monotonic()
                if self._proc is not None and self._proc.poll() is not None:
                    raise self._died(method)
                if left <= 0:
                    raise WebbuildError(f"Chromium did not answer {method} within {timeout_s:.0f} s")
                self._changed.wait(min(left, 0.5))
            reply = self._replies.pop(ident)
        if "error" in reply:
            raise WebbuildError(f"{method}: {reply['error'].get('message', reply['error'])}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def events(self, session: str) -> list[dict[str, Any]]:
        with self._changed:
            return [e for e in self._events if e.get("sessionId") == session]

    def _died(self, what: str) -> ToolchainError:
        self._stderr_reader.join(timeout=2)  # the process is gone: its last words are on their way
        tail = self._stderr.decode(errors="replace").strip().splitlines()[-5:]
        return ToolchainError(
            f"headless Chromium ({self.executable}) exited during {what}: " + " | ".join(tail)[-1500:],
            tip="run it by hand with --version; a GPU machine needs its libraries on LD_LIBRARY_PATH",
        )

    def _read_replies(self, fd: int) -> None:
        buffer = b""
        with os.fdopen(fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 16):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                with self._changed:
                    for raw in messages:
                        message = json.loads(raw)
                        if "id" in message:
                            self._replies[message["id"]] = message
                        else:
                            self._events.append(message)
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr = (self._stderr + line)[-_STDERR_TAIL:]


class Page:
    """One attached tab."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser = browser
        self.session = session

    def evaluate(self, expression: str, *, timeout_s: float = 600) -> Any:
        """The value of a JavaScript expression (awaited when it is a promise), as JSON."""
        result = self.browser.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True, "timeout": timeout_s * 1000},
            session=self.session,
            timeout_s=timeout_s + 5,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "exception")
            raise WebbuildError(f"the page threw: {text.splitlines()[0][:800]}")
        return result.get("result", {}).get("value")

    def wait_for(self, condition: str, *, timeout_s: float, poll_s: float = 0.25) -> None:
        """Polls a JavaScript boolean expression until it is true."""
        deadline = time.monotonic() + timeout_s
        while not self.evaluate(condition, timeout_s=max(5.0, timeout_s)):
            if time.monotonic() > deadline:
                raise WebbuildError(f"the page did not reach `{condition}` within {timeout_s:.0f} s")
            time.sleep(poll_s)

    def errors(self) -> list[str]:
        """Uncaught exceptions and console errors so far."""
        out = []
        for event in self.browser.events(self.session):
            params = event.get("params", {})
            if event.get("method") == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                out.append(details.get("exception", {}).get("description") or details.get("text", ""))
            elif event.get("method") == "Runtime.consoleAPICalled" and params.get("type") == "error":
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        return out
