"""Each package's public face: ``__all__`` lists exactly what it re-exports."""

from __future__ import annotations

import importlib
import types

import pytest


@pytest.mark.parametrize("name", ["heterarch", "actors", "runtime", "transports", "sandbox"])
def test_all_matches_exports(name: str) -> None:
    module = importlib.import_module(name)
    exported = {
        attr for attr, value in vars(module).items()
        if not attr.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(module.__all__) == exported
    assert len(module.__all__) == len(set(module.__all__))
