"""One tiny transformers model + CPU engine per family for the whole session, built on first use: each costs a
compile, and both test_families.py and a family's own module use it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from family_checks import TinyFamily, tiny_family


@pytest.fixture(scope="session")
def tiny_family_of(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], TinyFamily]:
    built: dict[str, TinyFamily] = {}

    def get(family: str) -> TinyFamily:
        if family not in built:
            built[family] = tiny_family(family, tmp_path_factory.mktemp(family))
        return built[family]

    return get
