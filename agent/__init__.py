"""The screening loop: brainstormers, the sandboxed executor, the campaign driver and the CLI."""

from __future__ import annotations


def package_version() -> str:
    """geoscreen's installed version (recorded in every ledger row's provenance)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("geoscreen")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"
