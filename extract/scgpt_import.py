"""Import scGPT's own model code without running ``scgpt/__init__``.

scgpt 0.2.4's package ``__init__`` imports torchtext (which no longer loads on modern torch),
IPython, matplotlib and scanpy.  The model itself (``scgpt/model/model.py``) needs only torch,
numpy and tqdm, so we register light parent packages whose ``__path__`` points at the installed
scgpt directory and let the normal import machinery load the real ``model.py`` (and its siblings
``dsbn.py`` and ``grad_reverse.py``).  We run scGPT's code, not a copy of it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import logging
import sys
import types
import warnings
from pathlib import Path
from types import ModuleType

from geoscreen.errors import GeoscreenError

SCGPT_VERSION = "0.2.4"
_INSTALL_FIX = f"pip install --no-deps scgpt=={SCGPT_VERSION} (after installing torch)"


@functools.cache
def scgpt_dir() -> Path:
    """The installed scgpt package directory, found without importing it."""
    loaded = sys.modules.get("scgpt")
    if loaded is not None and getattr(loaded, "__path__", None):
        return Path(list(loaded.__path__)[0])
    spec = importlib.util.find_spec("scgpt")
    if spec is None or not spec.submodule_search_locations:
        raise GeoscreenError("the scgpt package is not installed", field="scgpt",
                             fix=_INSTALL_FIX)
    return Path(list(spec.submodule_search_locations)[0])


def scgpt_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scgpt")
    except PackageNotFoundError:
        return "unknown"


def _stub_package(name: str, path: Path) -> ModuleType:
    """A package module that resolves submodules from `path` but runs no ``__init__``."""
    existing = sys.modules.get(name)
    if existing is not None:
        return existing
    mod = types.ModuleType(name)
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [str(path)]
    mod.__spec__ = spec
    mod.__path__ = [str(path)]
    mod.__package__ = name
    sys.modules[name] = mod
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, mod)
    return mod


def ensure_scgpt_root() -> ModuleType:
    """Register ``scgpt`` as a bare package (with the ``logger`` its modules expect)."""
    root = scgpt_dir()
    pkg = _stub_package("scgpt", root)
    if not hasattr(pkg, "logger"):
        pkg.logger = logging.getLogger("scGPT")
        pkg.__version__ = scgpt_version()
    return pkg


def load_model_module() -> ModuleType:
    """scGPT's ``scgpt.model.model`` module (TransformerModel and its encoders)."""
    if "scgpt.model.model" in sys.modules:
        return sys.modules["scgpt.model.model"]
    ensure_scgpt_root()
    _stub_package("scgpt.model", scgpt_dir() / "model")
    with warnings.catch_warnings():
        # model.py warns at import time that flash_attn is missing; we never use it.
        warnings.filterwarnings("ignore", message="flash_attn is not installed")
        try:
            module = importlib.import_module("scgpt.model.model")
        except ImportError as exc:
            raise GeoscreenError(f"scGPT's model code could not be imported ({exc})",
                                 field="scgpt", fix=_INSTALL_FIX) from None
    pkg = sys.modules["scgpt.model"]
    if not hasattr(pkg, "TransformerModel"):
        pkg.TransformerModel = module.TransformerModel
    return module


def transformer_model_class() -> type:
    """scGPT's own ``TransformerModel`` class."""
    return load_model_module().TransformerModel
