"""Load a hack/ script (whose file name has dashes) as a module, for tests of its functions."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import types

HACK = pathlib.Path(__file__).resolve().parents[2] / "hack"


def load(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), HACK / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module
