"""A recursive-descent parser for resource references and set algebra over them.

Grammar (positions in errors are 1-based character offsets into the reference)::

    expr     := term  (('|' | '-') term)*        left to right
    term     := atom  ('&' atom)*                '&' binds tighter
    atom     := '(' expr ')' | ref
    ref      := NAME ['@' VERSION] [':' SELECTOR] ['?' OPTION (';' OPTION)*]
    SELECTOR := '"' any text '"' | text up to ( ) | & ? or whitespace followed by '-'
    OPTION   := KEY ['=' VALUE]                  VALUE may be quoted

'-' is the difference operator only after whitespace or ')'; inside names and selectors it is a
plain character (``go-cooccurrence``, ``R-HSA-109582``, ``string:400-699``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from geoscreen.errors import GeoscreenError

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)*")
_VERSION = re.compile(r"[A-Za-z0-9_.+-]+")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIX = "see 'geoscreen resources list' for the reference grammar"


def syntax_error(text: str, pos: int, message: str) -> GeoscreenError:
    """A one-line error pointing at 0-based offset `pos` of `text`."""
    return GeoscreenError(f"position {pos + 1}: {message} in {text!r}", field="reference",
                          fix=_FIX)


@dataclass(frozen=True)
class Option:
    key: str
    value: str | None
    pos: int  # 0-based offset of the key


@dataclass(frozen=True)
class Ref:
    """One resource reference, e.g. ``go@bundled:GO:0005615?evidence=-IEA``."""

    name: str
    version: str | None
    selector: str
    options: tuple[Option, ...]
    pos: int  # 0-based offset of the name
    sel_pos: int  # 0-based offset of the selector text
    text: str  # the whole reference string this Ref came from
    span: tuple[int, int]  # [start, end) of this reference inside `text`

    @property
    def source(self) -> str:
        return self.text[self.span[0]:self.span[1]].strip()

    def error(self, message: str, offset: int = 0, *, at_name: bool = False) -> GeoscreenError:
        """A positioned error about this reference (offset into the selector by default)."""
        return syntax_error(self.text, self.pos if at_name else self.sel_pos + offset, message)

    def option_error(self, opt: Option, message: str) -> GeoscreenError:
        return syntax_error(self.text, opt.pos, message)


@dataclass(frozen=True)
class BinOp:
    op: str  # '|', '&' or '-'
    left: Node
    right: Node
    pos: int


Node = Ref | BinOp


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.n = len(text)

    def err(self, message: str, pos: int | None = None) -> GeoscreenError:
        return syntax_error(self.s, self.i if pos is None else pos, message)

    def ws(self) -> None:
        while self.i < self.n and self.s[self.i].isspace():
            self.i += 1

    def parse(self) -> Node:
        if not self.s.strip():
            raise GeoscreenError("empty reference", field="reference", fix=_FIX)
        node = self.expr()
        self.ws()
        if self.i < self.n:
            c = self.s[self.i]
            if c == ")":
                raise self.err("unmatched ')'")
            hint = ("; quote selectors that contain parentheses, e.g. go:\"...\""
                    if c == "(" else "")
            raise self.err(f"expected an operator (|, &, -) or the end, found {c!r}{hint}")
        return node

    def expr(self) -> Node:
        left = self.term(None)
        while True:
            self.ws()
            if self.i < self.n and self.s[self.i] in "|-":
                op, pos = self.s[self.i], self.i
                self.i += 1
                left = BinOp(op, left, self.term(op), pos)
            else:
                return left

    def term(self, after: str | None) -> Node:
        left = self.atom(after)
        while True:
            self.ws()
            if self.i < self.n and self.s[self.i] == "&":
                pos = self.i
                self.i += 1
                left = BinOp("&", left, self.atom("&"), pos)
            else:
                return left

    def atom(self, after: str | None) -> Node:
        self.ws()
        what = f"a resource name after {after!r}" if after else "a resource name"
        if self.i >= self.n:
            raise self.err(f"expected {what}")
        c = self.s[self.i]
        if c == "(":
            open_pos = self.i
            self.i += 1
            node = self.expr()
            self.ws()
            if self.i >= self.n or self.s[self.i] != ")":
                raise self.err(f"expected ')' to close the '(' at position {open_pos + 1}")
            self.i += 1
            return node
        if c in ")|&-?:@\"":
            raise self.err(f"expected {what}, found {c!r}")
        return self.ref(what)

    def ref(self, what: str) -> Ref:
        start = self.i
        m = _NAME.match(self.s, self.i)
        if not m:
            raise self.err(f"expected {what}, found {self.s[self.i]!r}")
        name = m.group(0)
        self.i = m.end()
        version = None
        if self.i < self.n and self.s[self.i] == "@":
            self.i += 1
            mv = _VERSION.match(self.s, self.i)
            if not mv:
                raise self.err(f"expected a version after '@' (e.g. {name}@bundled)")
            version = mv.group(0)
            self.i = mv.end()
        selector, sel_pos = "", self.i
        if self.i < self.n and self.s[self.i] == ":":
            self.i += 1
            while self.i < self.n and self.s[self.i] in " \t":
                self.i += 1
            sel_pos = self.i
            selector = self.selector()
        elif self.i < self.n and self.s[self.i] not in " \t\n()|&?":
            c = self.s[self.i]
            hint = ("; separate options with ';' (e.g. go:GO:0005615?evidence=-IEA;propagate=no)"
                    if c == "=" else "")
            raise self.err(f"expected ':' after resource name {name!r}, found {c!r}{hint}")
        options: list[Option] = []
        if self.i < self.n and self.s[self.i] == "?":
            self.i += 1
            options = self.options()
        return Ref(name=name, version=version, selector=selector, options=tuple(options),
                   pos=start, sel_pos=sel_pos, text=self.s, span=(start, self.i))

    def quoted(self) -> str:
        open_pos = self.i
        end = self.s.find('"', self.i + 1)
        if end < 0:
            raise self.err("unterminated quote", open_pos)
        self.i = end + 1
        return self.s[open_pos + 1:end]

    def selector(self) -> str:
        if self.i < self.n and self.s[self.i] == '"':
            return self.quoted()
        j = self.i
        while j < self.n:
            c = self.s[j]
            if c in "()|&?":
                break
            if c.isspace():
                k = j
                while k < self.n and self.s[k].isspace():
                    k += 1
                if k >= self.n or self.s[k] in "-()|&?":
                    break
                j = k
                continue
            j += 1
        text = self.s[self.i:j]
        self.i = j
        return text

    def options(self) -> list[Option]:
        out = []
        while True:
            m = _KEY.match(self.s, self.i)
            if not m:
                found = repr(self.s[self.i]) if self.i < self.n else "the end"
                raise self.err(f"expected an option name after {self.s[self.i - 1]!r}, "
                               f"found {found}")
            pos, key = self.i, m.group(0)
            self.i = m.end()
            value = None
            if self.i < self.n and self.s[self.i] == "=":
                self.i += 1
                if self.i < self.n and self.s[self.i] == '"':
                    value = self.quoted()
                else:
                    j = self.i
                    while j < self.n and not self.s[j].isspace() and self.s[j] not in ";()|&":
                        j += 1
                    value = self.s[self.i:j]
                    self.i = j
                    if not value:
                        raise self.err(f"expected a value after '{key}='")
            out.append(Option(key, value, pos))
            if self.i < self.n and self.s[self.i] == ";":
                self.i += 1
                continue
            return out


def parse(text: str) -> Node:
    """Parse a reference expression, raising a positioned GeoscreenError on bad syntax."""
    return _Parser(text).parse()


def refs(node: Node) -> list[Ref]:
    """All references in an expression, left to right."""
    if isinstance(node, Ref):
        return [node]
    return refs(node.left) + refs(node.right)
