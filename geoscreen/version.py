"""geoscreen's installed version (recorded in every ledger row's provenance)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)  # read once per process: every layer result's provenance asks
def package_version() -> str:
    """The installed distribution's version; ``0+unknown`` from an uninstalled source tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("geoscreen")
    except PackageNotFoundError:
        return "0+unknown"
