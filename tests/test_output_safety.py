"""Ledger text leaves geoscreen harmless: CSV cells that a spreadsheet would run as formulas are
quoted, and terminal output carries no control characters from statements or errors."""

from __future__ import annotations

import csv
import json

from geoscreen.agent.textsafe import csv_safe, terminal_safe

GENES = ",".join(f"G{i}" for i in range(40))
STATEMENTS = [
    '=HYPERLINK("http://evil.example","click") axis 1',
    "+1 separates axis 2",
    "-2+3 separates axis 3",
    "@SUM(1) separates axis 4",
    "\t=1+1 separates axis 5",
    "\x1b]0;pwned\x07\x1b[2J\rhidden axis 6 [/red] [bold]markup\x9b31m",
]
CONTROLS = ("\x1b", "\x07", "\r", "\x9b")
# a statement is stored as one line (tabs, CR and newlines become spaces); other control
# characters stay in the data and are neutralised on output
ONE_LINE = [" ".join(s.split()) for s in STATEMENTS]


def _yaml(statement: str, axis: int) -> str:
    return (f"- statement: {json.dumps(statement)}\n  probe: axis_separation\n"
            f"  params: {{axis: {axis}, positive: 'genes:{GENES}'}}\n")


def test_exports_and_terminal_output_are_neutralised(small_cache, tmp_path, cli):
    specs = tmp_path / "s.yaml"
    specs.write_text("".join(_yaml(s, k + 1) for k, s in enumerate(STATEMENTS)))
    ledger = tmp_path / "l.sqlite"
    out = {"queue add": cli("queue", "add", str(specs), "--ledger", str(ledger)),
           "queue list": cli("queue", "list", "--ledger", str(ledger))}
    out["campaign run"] = cli("campaign", "run", "--cache", str(small_cache.path), "--ledger",
                              str(ledger), "--brainstormer", "none", "--per-iteration", "6")
    out["campaign status"] = cli("campaign", "status", "--ledger", str(ledger))
    out["ledger list"] = cli("ledger", "list", "--ledger", str(ledger))
    out["ledger show"] = cli("ledger", "show", "6", "--ledger", str(ledger))
    for name, res in out.items():
        assert res.returncode == 0, (name, res.stderr)
        bad = [c for c in CONTROLS if c in res.stdout + res.stderr]
        assert not bad, (name, bad, res.stdout)
    assert "hidden axis 6 [/red] [bold]markup31m" in out["ledger list"].stdout
    assert "]0;pwned" in out["ledger show"].stdout  # the text stays, the ESC/BEL go

    csv_path = tmp_path / "r.csv"
    assert cli("ledger", "export", "--ledger", str(ledger), "--format", "csv", "-o",
               str(csv_path)).returncode == 0
    with open(csv_path, newline="", encoding="utf-8") as fh:
        cells = {r["hypothesis_id"]: r for r in csv.DictReader(fh)}
    got = [cells[str(k)]["statement"] for k in range(1, 7)]
    assert got[:5] == ["'" + s for s in ONE_LINE[:5]]  # text in a spreadsheet, not formulas
    assert got[5] == ONE_LINE[5]  # starts with ESC: no formula; the data itself is kept
    assert all(c["effect_size"] == "" or float(c["effect_size"]) == float(c["effect_size"])
               for c in cells.values())  # numbers stay numbers
    json_path = tmp_path / "r.json"
    cli("ledger", "export", "--ledger", str(ledger), "--format", "json", "-o", str(json_path))
    assert [r["statement"] for r in json.loads(json_path.read_text())] == ONE_LINE


def test_helpers():
    assert [csv_safe(x) for x in ("=1", "+1", "-1", "@1", "\t1", "\r1", "a=1", -1.5, None)] == [
        "'=1", "'+1", "'-1", "'@1", "'\t1", "'\r1", "a=1", -1.5, None]
    assert terminal_safe("a\x1b[31mb\x07c\rd\ne\u202ef\x00") == "a[31mbc d ef"
    assert terminal_safe("a\r\nb\tc", multiline=True) == "a\nb\tc"
