"""Hypothesis specs: loading, validation against probe parameters, canonical hashing, queueing."""

from __future__ import annotations

import json

import pytest

from geoscreen.errors import GeoscreenError
from geoscreen.hypotheses.loader import load_specs, parse_spec
from geoscreen.store.ledger import Ledger
from geoscreen.store.models import Hypothesis

GOOD = {"statement": "axis 1 separates A", "probe": "axis_separation",
        "params": {"axis": 1, "positive": "genes:G1,G2,G3,G4,G5"}}


def test_yaml_forms(tmp_path):
    (tmp_path / "one.yaml").write_text(
        "statement: axis 1 separates A\nprobe: axis_separation\n"
        "params: {axis: 1, positive: 'genes:G1,G2'}\n")
    (tmp_path / "list.yml").write_text(
        "- {statement: s one two, probe: pair_proximity, params: {pairs: 'pairs:G1-G2'}}\n"
        "- {statement: s three four, probe: pair_proximity, params: {pairs: 'pairs:G1-G3'}}\n")
    (tmp_path / "docs.yaml").write_text(
        "statement: first doc\nprobe: axis_separation\nparams: {positive: 'genes:A'}\n---\n"
        "statement: second doc\nprobe: axis_separation\nparams: {positive: 'genes:B'}\n")
    (tmp_path / "wrapped.json").write_text(json.dumps({"hypotheses": [GOOD]}))
    specs = load_specs(tmp_path)
    assert len(specs) == 6
    assert all(s.spec.source == "human" for s in specs)
    assert {s.spec.probe for s in specs} == {"axis_separation", "pair_proximity"}


def test_canonical_hash_ignores_spelling_of_defaults():
    a = parse_spec(GOOD, "a")
    b = parse_spec({**GOOD, "params": {"positive": "genes:G1,G2,G3,G4,G5", "axis": 1,
                                       "negative": "rest", "test": "mann_whitney"},
                    "statement": "different words", "rationale": "x", "tags": ["t"]}, "b")
    c = parse_spec({**GOOD, "params": {**GOOD["params"], "axis": 2}}, "c")
    d = parse_spec({**GOOD, "alternative": "greater"}, "d")
    e = parse_spec({**GOOD, "layers": [0, 1]}, "e")
    assert a.hash == b.hash
    assert len({a.hash, c.hash, d.hash, e.hash}) == 4
    assert a.alternative == "two-sided"  # the probe's default is filled in before hashing


@pytest.mark.parametrize("raw,message", [
    ({**GOOD, "probe": "axis_separaton"},
     "field 'probe': unknown probe 'axis_separaton'; did you mean 'axis_separation'"),
    ({**GOOD, "params": {"axs": 1, "positive": "genes:A"}},
     "field 'params.axs': unknown parameter 'axs' for probe 'axis_separation'; did you mean "
     "'axis' or 'axes'?"),
    ({**GOOD, "params": {"axis": 0, "positive": "genes:A"}},
     "field 'params.axis': Input should be greater than or equal to 1"),
    ({**GOOD, "params": {"axis": 1}}, "field 'params.positive': Field required"),
    ({**GOOD, "across_layers": "some"},
     "field 'across_layers': Input should be 'any', 'all', 'each', 'trend', 'changepoint' or "
     "'slope_change'"),
    ({**GOOD, "source": "robot"}, "field 'source': source must be 'human', 'offline' or"),
    ({**GOOD, "statment": "typo"}, "field 'statment': unknown field; did you mean 'statement'?"),
    ({**GOOD, "probe": "pair_proximity", "params": {"pairs": "x", "subspace": []}},
     "field 'params.subspace': Value error, subspace must list at least one axis"),
])
def test_invalid_specs_name_the_field(raw, message):
    with pytest.raises(GeoscreenError) as exc:
        parse_spec(raw, "specs.yaml: spec #1")
    text = str(exc.value)
    assert text.startswith("specs.yaml: spec #1: ")
    assert message in text, text
    assert "\n" not in text


def test_yaml_syntax_error_names_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("statement: x\nprobe: [unclosed\n")
    with pytest.raises(GeoscreenError, match=r"bad.yaml: is not valid YAML: .* at line 3"):
        load_specs(f)


def test_queue_add_is_all_or_nothing(tmp_path, cli):
    specs = tmp_path / "specs.yaml"
    specs.write_text(
        "- {statement: good one here, probe: axis_separation, params: {positive: 'genes:A'}}\n"
        "- {statement: bad one here, probe: axis_separation, params: {postive: 'genes:A'}}\n")
    ledger = tmp_path / "l.sqlite"
    res = cli("queue", "add", str(specs), "--ledger", str(ledger))
    assert res.returncode == 2
    assert "specs.yaml: spec #2 ('bad one here'): field 'params.postive'" in res.stderr
    assert "Traceback" not in res.stderr
    led = Ledger(ledger)
    with led.session() as s:
        assert s.query(Hypothesis).count() == 0
    specs.write_text(
        "- {statement: good one here, probe: axis_separation, params: {positive: 'genes:A'}}\n"
        "- {statement: same test again, probe: axis_separation, params: {positive: 'genes:A',"
        " axis: 1}}\n")
    res = cli("queue", "add", str(specs), "--ledger", str(ledger))
    assert res.returncode == 0, res.stderr
    assert "queued 1 hypotheses (#1..#1)" in res.stdout
    assert "skipped duplicate of #1: same test again" in res.stdout
    res = cli("queue", "list", "--ledger", str(ledger))
    assert "good one here" in res.stdout and "queued" in res.stdout
