"""geoscreen's installed version (recorded in every ledger row's provenance)."""

from __future__ import annotations


def package_version() -> str:
    """The installed distribution's version; ``0+unknown`` from an uninstalled source tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("geoscreen")
    except PackageNotFoundError:
        return "0+unknown"
