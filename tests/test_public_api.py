"""Each package's public face: ``__all__`` lists exactly what it re-exports."""

from __future__ import annotations

import importlib
import types

import pytest


@pytest.mark.parametrize(
    "name", ["heterarch", "actors", "actors.agents", "runtime", "transports", "sandbox"])
def test_all_matches_exports(name: str) -> None:
    module = importlib.import_module(name)
    exported = {
        attr for attr, value in vars(module).items()
        if not attr.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(module.__all__) == exported
    assert len(module.__all__) == len(set(module.__all__))


def test_engine_imports_no_tools() -> None:
    """``import runtime`` loads neither the tools (simulator, CLI, pytest plugin) nor the heavy
    libraries only they or an opted-in path need (litellm, rich, scikit-learn)."""
    import subprocess
    import sys

    code = ("import sys, runtime, actors, transports, sandbox; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'litellm', 'rich', 'sklearn'} or m.startswith(('heterarch.sim', 'heterarch.cli', "
            "'heterarch.pytest_plugin')))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert loaded == []
