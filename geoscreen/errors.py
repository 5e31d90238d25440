"""One exception type for every user-facing failure.

The CLI turns a `GeoscreenError` into a single line on stderr and a non-zero exit code; anything
else is a bug and keeps its traceback.  Messages should name the file, the field and the fix.
"""

from __future__ import annotations


class GeoscreenError(Exception):
    """A problem with the user's input or environment, reported as one clear line."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None,
                 fix: str | None = None) -> None:
        parts = []
        if path:
            parts.append(str(path))
        if field:
            parts.append(f"field '{field}'")
        head = ": ".join(parts)
        text = f"{head}: {message}" if head else message
        if fix:
            text = f"{text} ({fix})"
        super().__init__(text)
        self.path = path
        self.field = field
        self.fix = fix


def did_you_mean(word: str, choices: list[str] | tuple[str, ...], n: int = 3) -> str:
    """A short hint: the closest valid choices first, then the others."""
    import difflib

    choices = sorted(set(choices))
    if not choices:
        return "nothing is registered"
    close = difflib.get_close_matches(word, choices, n=n, cutoff=0.6)
    if not close:
        lowered = [c for c in choices if word.lower() in c.lower() or c.lower() in word.lower()]
        close = lowered[:n]
    rest = [c for c in choices if c not in close]
    shown = ", ".join(rest[:15]) + (", ..." if len(rest) > 15 else "")
    if close:
        head = f"did you mean {' or '.join(repr(c) for c in close)}?"
        return f"{head} (others: {shown})" if rest else head
    return f"valid: {shown}"
