"""The README's main command: the demo finds what was planted and nothing else."""

from __future__ import annotations

import json

from geoscreen.extract.synthetic import build_demo_data


def test_demo_finds_planted_structure(tmp_path, cli):
    out = tmp_path / "demo"
    res = cli("demo", "--out", str(out), "--iterations", "3", "--genes", "1500", timeout=900)
    assert res.returncode == 0, res.stderr
    assert "SYNTHETIC cache" in res.stdout
    assert (out / "ledger.sqlite").exists() and (out / "results.csv").exists()
    rows = json.loads(cli("ledger", "list", "--ledger", str(out / "ledger.sqlite"),
                          "--json").stdout)
    by_statement = {r["statement"]: r for r in rows}
    planted = [
        "The top singular axis separates extracellular-space genes from cytosolic genes",
        "High-confidence STRING partners sit closer than chance in SV2-SV4",
        "The effective rank of the gene matrix falls with depth",
    ]
    controls = [
        "High-confidence STRING partners sit closer than chance in SV20-SV22",
        "SV1 separates a random set of 150 genes from the rest",
    ]
    for s in planted:
        assert by_statement[s]["significant"], s
    for s in controls:
        assert by_statement[s]["status"] == "done" and not by_statement[s]["significant"], s
    assert {r["source"] for r in rows} == {"human", "offline"}
    assert "planted structure vs what the campaign found" in res.stdout


def test_demo_data_is_seeded_and_has_zero_rows():
    a = build_demo_data(seed=3, n_genes=800, dim=16, n_layers=3)
    b = build_demo_data(seed=3, n_genes=800, dim=16, n_layers=3)
    assert a.genes == b.genes
    assert all((a.layers[k] == b.layers[k]).all() for k in a.layers)
    zero = ~a.layers["L0"].any(axis=1)
    assert zero.sum() == len(a.planted["zero_genes"]) == 8
