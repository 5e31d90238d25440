"""Output for people and pipes: one place that decides how the CLI writes.

At a terminal, rich renders tables to the terminal's width, with colour and live progress.
Piped to a file or another program (``| cat``, ``> run.log``), tables are rendered as wide as
their content (no cell wraps, no word is split: ``gene_shuffle`` never becomes
``gene_shuffl e``), without colour codes, and long runs log plain timestamped lines.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Any

PIPE_WIDTH = 4000  # columns when piped: wide enough for any table row


def interactive() -> bool:
    """Whether stdout is a terminal a person is watching."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def console(**kw: Any) -> Any:
    """A rich Console for stdout: terminal width at a terminal, content width when piped."""
    from rich.console import Console

    if interactive():
        return Console(**kw)
    return Console(**{"width": PIPE_WIDTH, "no_color": True, "soft_wrap": True,
                      "highlight": False, **kw})


def stamp() -> str:
    """An ISO timestamp in UTC to the second, for log lines read the next morning."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def fmt_number(x: float | None) -> str:
    """A number in a table cell: three significant digits, empty when missing."""
    return "" if x is None else f"{x:.3g}"


def ledger_option() -> Any:
    """The `--ledger` option every command shares; `GEOSCREEN_LEDGER` supplies a default."""
    import typer

    return typer.Option(..., "--ledger", envvar="GEOSCREEN_LEDGER", metavar="LEDGER",
                        help="ledger file (SQLite) or SQLAlchemy URL [env: GEOSCREEN_LEDGER]",
                        show_envvar=False)
