"""Output for pipes (issue 19, item 7): piped tables keep every cell on one line, and a piped
campaign logs timestamped plain lines naming each hypothesis."""

from __future__ import annotations

import json
import re
from pathlib import Path

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ  ")


def test_piped_tables_never_split_a_word(cli):
    res = cli("probes", "list", env={"COLUMNS": "60"})  # even when the environment says narrow
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    from geoscreen.probes.registry import list_probes

    for p in [p for p in list_probes() if p.module.startswith("geoscreen.")]:  # built-ins
        row = [ln for ln in lines if f" {p.name} " in ln]
        assert row, f"{p.name} has no row of its own"
        assert p.family in row[0] and p.version in row[0]
    assert "gene_shuffle" in res.stdout and "\x1b[" not in res.stdout  # no colour codes


def test_a_piped_campaign_logs_timestamped_lines(small_cache, tmp_path: Path, cli):
    spec = {"statement": "Planted genes separate on axis 1", "probe": "axis_separation",
            "params": {"positive": "genes:" + ",".join(f"G{i}" for i in range(40))}}
    f = tmp_path / "s.json"
    f.write_text(json.dumps(spec))
    ledger = tmp_path / "l.sqlite"
    assert cli("queue", "add", str(f), "--ledger", str(ledger)).returncode == 0
    res = cli("campaign", "run", "--cache", str(small_cache.path), "--ledger", str(ledger),
              "--brainstormer", "none", "--iterations", "1")
    assert res.returncode == 0, res.stderr
    logged = [ln for ln in res.stdout.splitlines() if STAMP.match(ln)]
    text = "\n".join(logged)
    assert "iteration 1/1: 1 hypotheses queued" in text
    assert "#1 started: Planted genes separate on axis 1" in text
    assert re.search(r"#1 done: p=[0-9.e-]+ auroc_oriented=", text)
    assert "iteration 1 done: 1 discoveries / 1 tested" in text
    # `ledger list` piped to a file keeps the whole statement; COLUMNS still asks for a width
    long = spec["statement"]
    piped = cli("ledger", "list", "--ledger", str(ledger), env={"COLUMNS": ""}).stdout
    assert long in piped and "…" not in piped
    narrow = cli("ledger", "list", "--ledger", str(ledger), env={"COLUMNS": "60"}).stdout
    assert long not in narrow and "…" in narrow
    tsv = cli("ledger", "list", "--ledger", str(ledger), "--tsv").stdout.splitlines()
    from geoscreen.store.query import EXPORT_COLUMNS

    head, row = tsv[0].split("\t"), tsv[1].split("\t")
    assert head == list(EXPORT_COLUMNS) and len(row) == len(head) and len(tsv) == 2
    assert row[head.index("statement")] == long and float(row[head.index("q_bh")]) <= 0.05


def test_help_shows_choices_and_no_bogus_flag_types(cli):
    res = cli("campaign", "run", "--help", env={"COLUMNS": "160"})
    assert res.returncode == 0
    assert "<bool>" not in res.stdout
    assert "lord++|saffron|lond|batch-bh|e-lond" in res.stdout
    assert "offline|openai|none" in res.stdout


def test_usage_errors_are_one_line_and_the_ledger_can_come_from_the_environment(cli, tmp_path):
    res = cli("campaign", "run", "--cache", "x", "--bogus")
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert res.stderr.startswith("error: geoscreen campaign run: No such option: --bogus")
    res = cli("ledger", "list")
    assert res.returncode == 2 and "Missing option '--ledger'" in res.stderr
    assert res.stderr.count("\n") == 1
    missing = tmp_path / "none.sqlite"
    res = cli("ledger", "list", env={"GEOSCREEN_LEDGER": str(missing)})
    assert res.returncode == 2 and f"{missing}: field '--ledger': does not exist" in res.stderr
