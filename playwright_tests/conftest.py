"""Fixtures for end-to-end tests: the real default model packaged once, served on loopback, opened in Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from webbuild.browser import launch_options
from webbuild.commands.package import PackageOptions, package
from webbuild.serve.app import serving

DEFAULT_MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict:
    """pytest-playwright launches Debian's Chromium with WebGPU enabled (no downloaded browsers here)."""
    return launch_options()


@pytest.fixture(scope="session")
def smollm2_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return package(PackageOptions(DEFAULT_MODEL, out=tmp_path_factory.mktemp("dist") / DEFAULT_MODEL)).site


@pytest.fixture(scope="session")
def site_url(smollm2_site: Path) -> Iterator[str]:
    with serving(smollm2_site) as url:
        yield url
