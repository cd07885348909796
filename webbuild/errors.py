"""One error tree for every surface: the CLI maps it to exit codes, the REST API to OpenAI's envelope."""

from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path


class WebbuildError(Exception):
    """Base of every error webbuild raises on purpose; its message is meant for the user.

    ``tip`` names the next action; ``exit_code`` is what the CLI exits with;
    ``status``/``type``/``code`` are what the REST API reports.
    """

    exit_code = 1
    status = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, tip: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.tip = tip
        self.param = param


class InputError(WebbuildError):
    """The user named something that does not exist or cannot be read (preset, file, directory)."""

    code = "invalid_input"


class UnsupportedError(WebbuildError):
    """The input is well-formed but asks for something webbuild does not support (architecture, scheme)."""

    code = "unsupported"


class CorruptFileError(WebbuildError):
    """A weights file or download is damaged or truncated."""

    code = "corrupt_file"


class FileSystemError(WebbuildError):
    """A file or folder could not be written or read: no permission, a read-only or full disk. The message names
    the path; the tip says what to do about that cause."""

    status = 500
    type = "server_error"
    code = "filesystem_error"
    path: str | None = None  # the file or folder at fault

    @classmethod
    def from_os_error(cls, exc: OSError, path: str | Path | None = None, fix: str = "") -> FileSystemError:
        """``exc`` as the user should read it: ``path`` (the location the user chose: a site's folder, the cache)
        or else the file ``exc`` names, its cause, and ``fix`` (what else to choose, e.g. "another folder with
        --out") after the cause's own advice. A write that fails for lack of space names no file: ``path`` does."""
        code, reason, named = exc.errno, exc.strerror or str(exc), exc.filename or exc.filename2
        if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
            _, named, reason = exc.args[0][0]  # copytree's first failure: (source, destination, reason)
            found = re.search(r"\[Errno (\d+)\] ([^:]+)", str(reason))
            code, reason = (int(found.group(1)), found.group(2)) if found else (None, str(reason))
        advice = {
            errno.EROFS: f"It is on a read-only file system: {fix or 'choose a location on a writable disk'}.",
            errno.EACCES: f"Give yourself write permission there, or {fix or 'choose another location'}.",
            errno.EPERM: f"Give yourself write permission there, or {fix or 'choose another location'}.",
            errno.ENOSPC: f"Its disk is full: free some space, or {fix or 'choose a location on another disk'}.",
            errno.EDQUOT: f"Your disk quota there is used up: free some space, or {fix or 'choose another location'}.",
        }.get(code or 0, f"Check the path{', or ' + fix if fix else ''}.")
        where = path or named
        at = f" (at {named})" if path and named and str(named) != str(path) else ""
        error = cls(f"{where}: {reason}{at}." if where else f"{reason}.", tip=advice)
        error.path = str(where) if where else None
        return error


class DownloadError(WebbuildError):
    """A download failed or kept failing its integrity check."""

    code = "download_failed"
    status = 503


class ToolchainError(WebbuildError):
    """A tool the build needs (emcc, chromium, TVM) is missing or broken; `webbuild doctor` reports these."""

    exit_code = 3
    status = 503
    type = "server_error"
    code = "toolchain_missing"


class MissingDependencyError(ToolchainError):
    """A feature needs an optional Python package that is not installed (REST 501: this server cannot do it
    until its operator installs the extra the message names)."""

    status = 501
    code = "missing_dependency"


class BuildError(WebbuildError):
    """A compile or link step failed."""

    status = 500
    type = "server_error"
    code = "build_failed"


class EngineUnavailableError(WebbuildError):
    """The server is up but its engine is not (REST 503): still loading, which can take minutes when the first
    start compiles the model (clients should come back after ``retry_after`` seconds), or ``failed`` to load
    (code ``model_load_failed``: retrying will not help)."""

    status = 503
    type = "server_error"
    code = "model_loading"

    def __init__(self, message: str, *, retry_after: int | None = None, failed: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        if failed:
            self.code = "model_load_failed"


class InvalidRequestError(WebbuildError):
    """An OpenAI-style request with a missing, mistyped or out-of-range field (REST 400)."""

    code = "invalid_request"


class ContextLengthExceededError(InvalidRequestError):
    """The prompt plus requested tokens do not fit the model's context window."""

    code = "context_length_exceeded"


class UnsupportedParameterError(InvalidRequestError):
    """A valid OpenAI field or value this engine does not implement (tools, images, echo with logprobs)."""

    code = "unsupported_parameter"


class ModelNotFoundError(InvalidRequestError):
    """``model`` names a model this server does not serve (OpenAI answers 404 ``model_not_found``)."""

    status = 404
    code = "model_not_found"


class AuthenticationError(WebbuildError):
    """The server was started with ``--api-key`` and the request has no or another bearer token."""

    status = 401
    code = "invalid_api_key"


class RequestTooLargeError(InvalidRequestError):
    """The request body is larger than the server accepts."""

    status = 413
    code = "request_too_large"


class UnsupportedMediaTypeError(InvalidRequestError):
    """An API call whose body is not declared as JSON (``Content-Type: application/json``)."""

    status = 415
    code = "unsupported_media_type"
