"""Modules imported on first use: validating a spec must not pay for what only running it needs.

``stats = lazy_module("scipy.stats")`` at the top of a probe module costs nothing until the
first ``stats.something`` (scipy.stats alone takes about a second to import on a 2-core
machine, and `geoscreen queue add` only validates).
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """`name`, loaded on first attribute access (the module itself if already imported)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}")
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
