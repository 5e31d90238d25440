"""Text from the ledger made safe for the places it is shown: terminals and spreadsheets.

Statements, rationales and errors come from people, language models and probes.  Printed raw,
an ESC sequence in a statement can rewrite the terminal (move the cursor, retitle the window,
hide the lines before it) and a statement starting with ``=`` runs as a formula when the CSV
export is opened in a spreadsheet.  These helpers neutralise both, at the boundary where the
text leaves geoscreen; the ledger keeps what was written.
"""

from __future__ import annotations

import re
from typing import Any

# C0 controls except TAB and LF, DEL, C1 controls (0x9b is a one-byte CSI on some terminals),
# and the bidirectional overrides and isolates that reorder what is displayed ("trojan source").
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile("[\t\n\x0b\x0c\r\x85\u2028\u2029]+")
_SURROGATE = re.compile("[\ud800-\udfff]")

# OWASP, "CSV Injection": cells starting with these are formulas (or become one) in Excel,
# LibreOffice and Google Sheets.
CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def terminal_safe(text: Any, *, multiline: bool = False) -> str:
    """`text` without terminal control characters.

    Parameters
    ----------
    text
        Anything; non-strings are converted with ``str``.
    multiline
        Keep newlines and tabs (for blocks such as an error's traceback); otherwise every run of
        line breaks and tabs becomes one space, so one value stays on one line.

    Returns
    -------
    str
        The text with ESC, BEL, CR, the other C0 and C1 controls, DEL and bidi overrides removed.
    """
    s = text if isinstance(text, str) else str(text)
    if not multiline:
        s = _LINE_BREAKS.sub(" ", s)
    else:
        s = s.replace("\r\n", "\n")
    return _CONTROL.sub("", s)


def terminal_safe_tree(obj: Any) -> Any:
    """`terminal_safe` applied to every string inside nested dicts, lists and tuples."""
    if isinstance(obj, str):
        return terminal_safe(obj, multiline=True)
    if isinstance(obj, dict):
        return {terminal_safe_tree(k): terminal_safe_tree(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(terminal_safe_tree(v) for v in obj)
    return obj


def csv_safe(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text, never evaluates.

    Strings starting with ``=``, ``+``, ``-``, ``@``, TAB or CR get a leading single quote, as
    OWASP recommends; numbers and other values are returned unchanged (a negative effect size
    stays a number).

    Parameters
    ----------
    value
        One cell.

    Returns
    -------
    Any
        The cell, quoted if it is a string a spreadsheet would read as a formula.
    """
    if isinstance(value, str) and value.startswith(CSV_FORMULA_START):
        return "'" + value
    return value


def valid_unicode(obj: Any) -> Any:
    """Replace lone UTF-16 surrogates (invalid in UTF-8, refused by SQLite) with U+FFFD.

    JSON may encode them (``"\\ud800"``) and Python decodes them into a `str` that cannot be
    encoded, stored or sent; this walks strings, dict keys and lists.
    """
    if isinstance(obj, str):
        return _SURROGATE.sub("\ufffd", obj) if _SURROGATE.search(obj) else obj
    if isinstance(obj, dict):
        return {valid_unicode(k): valid_unicode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [valid_unicode(v) for v in obj]
    return obj
