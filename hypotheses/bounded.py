"""Parsing with bounds: spec files and model replies cost bounded time and memory, or fail cleanly.

A spec file or an LLM reply is untrusted input.  Unbounded, a 1.3 KB YAML file of nested aliases
("billion laughs") expands to gigabytes, a FIFO or `/dev/zero` blocks or never ends, 50,000
nested brackets exhaust the interpreter's stack and a 5,000-digit integer trips Python's
int-conversion limit.  Everything here fails with a `GeoscreenError` (one line, exit 2) before
any of that happens:

* files: regular files only (checked on the open descriptor, so a file swapped for a FIFO after
  the check cannot block), at most `MAX_FILE_BYTES`, read once, strict UTF-8;
* YAML: at most `MAX_SEPARATORS` separators (a bound on the values written, counted before
  parsing), at most `MAX_NODES` values after alias expansion, at most `MAX_DEPTH` levels of
  nesting, no recursive aliases, integers of at most `MAX_INT_DIGITS` digits;
* JSON: the same depth and integer limits, checked before the standard parser runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from geoscreen.errors import GeoscreenError

MAX_FILE_BYTES = 1 << 20  # 1 MiB per spec file
MAX_DEPTH = 32  # nesting of mappings and lists
MAX_NODES = 100_000  # YAML nodes, as written and after alias expansion
MAX_INT_DIGITS = 64


class BoundExceeded(ValueError):
    """Input beyond one of this module's limits (the message says which, `fix` what to do)."""

    def __init__(self, message: str, fix: str = "write specs as plain mappings and lists"
                 ) -> None:
        super().__init__(message)
        self.fix = fix


_INT_FIX = "quote it if it is meant as text"


# -- files ------------------------------------------------------------------------------------
def read_text_file(path: str | os.PathLike, *, max_bytes: int = MAX_FILE_BYTES,
                   what: str = "spec file") -> str:
    """The UTF-8 text of a regular file of at most `max_bytes` bytes.

    Parameters
    ----------
    path
        The file.
    max_bytes
        Size cap, checked before reading and enforced while reading (a growing file).
    what
        How the file is named in errors.

    Returns
    -------
    str
        The decoded text.

    Raises
    ------
    GeoscreenError
        Missing, not a regular file (FIFO, device, folder, socket), too large, unreadable or
        not UTF-8.
    """
    from geoscreen.store.userfiles import file_policy, read_text

    # spec and config files are the user's own: no folder policy, but the same checks

    with file_policy(None):
        return read_text(path, what=what, max_bytes=max_bytes,
                         fix="split it into several files")


# -- YAML -------------------------------------------------------------------------------------
# libyaml's parser and composer (C) when present: fast, and it refuses nesting beyond 1,000
# levels itself; PyYAML's pure-Python ones otherwise.  Objects are constructed in Python only
# after the composed node graph has passed `_check_graph`.
_BASE = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader


class _BoundedLoader(_BASE):  # type: ignore[misc, valid-type]
    """The safe loader, with integers of at most `MAX_INT_DIGITS` digits."""

    def construct_yaml_int(self, node: Node) -> int:  # type: ignore[override]
        digits = sum(c.isdigit() for c in str(node.value))
        if digits > MAX_INT_DIGITS:
            raise BoundExceeded(f"an integer with {digits:,} digits at line "
                                f"{node.start_mark.line + 1} (at most {MAX_INT_DIGITS})",
                                _INT_FIX)
        return super().construct_yaml_int(node)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)

# Every YAML node but the first follows one of these (a flow separator or opener, a key
# indicator, a line break: block items start on a new line), so their count bounds the nodes
# the composer builds, before it builds them (separators inside strings only make it loose).
_SEPARATORS = (",", "\n", "[", "{", ":", "?")
MAX_SEPARATORS = 150_000


def _check_graph(root: Node) -> None:
    """Height and size of the document as it expands (aliases counted every time they are
    used), computed on the shared node graph without expanding it; recursive aliases refused."""
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            height[key] = 1 + max((height[id(k)] for k in kids), default=0)
            if height[key] > MAX_DEPTH:
                raise BoundExceeded(f"nested deeper than {MAX_DEPTH} levels at line "
                                    f"{node.start_mark.line + 1}")
            if size[key] > MAX_NODES:
                raise BoundExceeded(f"holds more than {MAX_NODES:,} values (an alias counts "
                                    "as many as it stands for)")
            continue
        if key in size:
            continue
        on_path.add(key)
        stack.append((node, True))
        for k in _children(node):
            if id(k) in on_path:
                raise BoundExceeded("holds a recursive alias (an anchor used inside itself) "
                                    f"at line {k.start_mark.line + 1}")
            if id(k) not in size:
                stack.append((k, False))


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [x for pair in node.value for x in pair]
    return []


def yaml_documents(text: str, where: str) -> list[Any]:
    """Every non-empty YAML document in `text`, within this module's limits.

    Raises
    ------
    GeoscreenError
        Invalid YAML, or beyond a limit; one line naming `where`.
    """
    seps = sum(text.count(c) for c in _SEPARATORS)
    if seps > MAX_SEPARATORS:
        raise GeoscreenError(f"is refused: {seps:,} separators (commas, colons, line breaks, "
                             f"brackets); at most {MAX_SEPARATORS:,}", path=where,
                             fix="split it into several files")
    loader = _BoundedLoader(text)
    try:
        out = []
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            _check_graph(node)
            doc = loader.construct_document(node)
            if doc is not None:
                out.append(doc)
        return out
    except BoundExceeded as exc:
        raise GeoscreenError(f"is refused: {exc}", path=where, fix=exc.fix) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["?"])[0]
        raise GeoscreenError(f"is not valid YAML: {_first_line(problem)}{at}",
                             path=where) from None
    except (ValueError, RecursionError) as exc:  # a constructor's own limits
        raise GeoscreenError(f"is refused: {_first_line(exc)}", path=where) from None
    finally:
        loader.dispose()


# -- JSON -------------------------------------------------------------------------------------
def json_brackets(text: str) -> Iterator[tuple[int, str]]:
    """(position, character) of every bracket of `text` outside double-quoted JSON strings (a
    linear scan that honours backslash escapes)."""
    in_str = esc = False
    for i, ch in enumerate(text):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{]}":
            yield i, ch


def json_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """The deepest bracket nesting in `text` outside strings, counting no further than
    `limit` + 1 (a linear scan; no recursion)."""
    depth = deepest = 0
    for _, ch in json_brackets(text):
        if ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif ch in "]}":
            depth = max(0, depth - 1)
    return deepest


def bounded_int(s: str) -> int:
    digits = len(s.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise BoundExceeded(f"an integer with {digits:,} digits (at most {MAX_INT_DIGITS})",
                            _INT_FIX)
    return int(s)


def json_loads(text: str) -> Any:
    """`json.loads` within this module's depth and integer limits.

    Raises
    ------
    BoundExceeded
        Nested deeper than `MAX_DEPTH`, or an integer longer than `MAX_INT_DIGITS` digits.
    json.JSONDecodeError
        Not JSON.
    """
    if json_depth(text) > MAX_DEPTH:
        raise BoundExceeded(f"nested deeper than {MAX_DEPTH} levels")
    return json.loads(text, parse_int=bounded_int)


def json_document(text: str, where: str) -> Any:
    """One JSON document, as `yaml_documents` does for YAML (one-line errors naming `where`)."""
    try:
        return json_loads(text)
    except BoundExceeded as exc:
        raise GeoscreenError(f"is refused: {exc}", path=where, fix=exc.fix) from None
    except json.JSONDecodeError as exc:
        raise GeoscreenError(f"is not valid JSON: {exc.msg} at line {exc.lineno}",
                             path=where) from None
    except (ValueError, RecursionError) as exc:
        raise GeoscreenError(f"is refused: {_first_line(exc)}", path=where) from None


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "…") if len(text) > 200 else (text or type(exc).__name__)

