"""The reference grammar: atoms, options, quoting, precedence and positioned errors."""

from __future__ import annotations

import pytest

from geoscreen.errors import GeoscreenError
from geoscreen.store.resources.grammar import BinOp, Ref, parse, refs


def show(node: object) -> str:
    """A compact rendering of the tree: atoms by source text, operators fully parenthesised."""
    if isinstance(node, Ref):
        return node.source
    assert isinstance(node, BinOp)
    return f"({show(node.left)} {node.op} {show(node.right)})"


def test_simple_atoms_keep_colons_dashes_and_spaces_inside_selectors() -> None:
    r = parse("go:GO:0005615")
    assert isinstance(r, Ref) and (r.name, r.selector) == ("go", "GO:0005615")
    assert parse("reactome:R-HSA-109582").selector == "R-HSA-109582"
    assert parse("string:400-699").selector == "400-699"
    assert parse("markers:B cells").selector == "B cells"
    assert parse("go-cooccurrence").name == "go-cooccurrence"
    assert parse("pairs:PAX5-CD19,BATF-IRF4").selector == "PAX5-CD19,BATF-IRF4"


def test_quotes_options_and_versions() -> None:
    r = parse('go@bundled:"regulation of (something) - x"?evidence=-IEA,-ND;propagate=no')
    assert isinstance(r, Ref)
    assert r.version == "bundled"
    assert r.selector == "regulation of (something) - x"
    assert [(o.key, o.value) for o in r.options] == [("evidence", "-IEA,-ND"),
                                                      ("propagate", "no")]
    r = parse('markers:B cells?organ="Immune system"')
    assert isinstance(r, Ref) and r.options[0].value == "Immune system"


def test_precedence_and_parentheses() -> None:
    assert show(parse("a:1 | b:2 & c:3")) == "(a:1 | (b:2 & c:3))"
    assert show(parse("a:1 - b:2 - c:3")) == "((a:1 - b:2) - c:3)"
    assert show(parse("(a:1 | b:2) & c:3")) == "((a:1 | b:2) & c:3)"
    node = parse("string:>=700 - go-cooccurrence")
    assert show(node) == "(string:>=700 - go-cooccurrence)"
    assert [r.name for r in refs(parse("markers:B cells - markers:T cells"))] == \
        ["markers", "markers"]
    assert show(parse("a:1&b:2|c:3")) == "((a:1 & b:2) | c:3)"


@pytest.mark.parametrize(("text", "position", "fragment"), [
    ("string:>=700 - ", 16, "expected a resource name after '-'"),
    ("(go:GO:0005615 | go:GO:0005829", 31, "expected ')' to close the '(' at position 1"),
    ("go:GO:0005615)", 14, "unmatched ')'"),
    ('go:"cytosol', 4, "unterminated quote"),
    ("| go:GO:1", 1, "expected a resource name, found '|'"),
    ("string>=700", 7, "expected ':' after resource name 'string'"),
    ("go:GO:1?evidence=-IEA&propagate=no", 32, "separate options with ';'"),
    ("go:GO:1?", 9, "expected an option name"),
    ("go@:GO:1", 4, "expected a version after '@'"),
    ("go:GO:1 (x)", 9, "expected an operator (|, &, -) or the end, found '('"),
])
def test_malformed_references_say_where_and_what_was_expected(text: str, position: int,
                                                              fragment: str) -> None:
    with pytest.raises(GeoscreenError) as err:
        parse(text)
    msg = str(err.value)
    assert f"position {position}:" in msg
    assert fragment in msg
    assert "\n" not in msg


def test_empty_reference() -> None:
    with pytest.raises(GeoscreenError, match="empty reference"):
        parse("   ")
