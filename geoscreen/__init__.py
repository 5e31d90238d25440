"""geoscreen: statistically disciplined hypothesis screening of foundation-model geometry.

The package's kernel lives here, below every other layer: errors (`geoscreen.errors`), the
typed per-layer result (`geoscreen.result`), combining layers (`geoscreen.combine`) and the
online FDR procedures (`geoscreen.online_fdr`).  The public Python API (`geoscreen.api`) sits on
top of everything and is loaded on first use, so ``import geoscreen`` stays cheap::

    import geoscreen
    led = geoscreen.open_ledger("screen.sqlite")
    df = led.hypotheses()                  # a pandas DataFrame, one row per hypothesis
    res = geoscreen.run_spec(spec, "cache/")   # one spec, in this process

Layers (checked by import-linter, `tests/test_layers.py`): ``agent`` > ``hypotheses`` >
``probes`` | ``extract`` > ``store`` > the kernel; nothing imports upwards.
"""

from __future__ import annotations

from typing import Any

__all__ = ["__version__", "package_version", "open_ledger", "open_cache", "run_spec",
           "run_campaign", "GeoscreenError"]


from geoscreen.version import package_version

__version__ = package_version()


def __getattr__(name: str) -> Any:  # the API, imported on first use
    if name == "GeoscreenError":
        from geoscreen.errors import GeoscreenError

        return GeoscreenError
    if name in ("open_ledger", "open_cache", "run_spec", "run_campaign"):
        from geoscreen import api

        return getattr(api, name)
    raise AttributeError(f"module 'geoscreen' has no attribute {name!r}")
