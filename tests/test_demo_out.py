"""`geoscreen demo --out DIR` never deletes what it did not write.

It used to remove the whole folder whenever it held a `ledger.sqlite` (a user's notes next to it
went too).  Now demo outputs already there are refused unless `--overwrite`, and `--overwrite`
removes only the files a demo wrote (its marker file says it did)."""

from __future__ import annotations

import numpy as np
import pytest

from geoscreen.agent.demo import DEMO_MODEL, MARKER, clear_demo_output, mark_demo_output
from geoscreen.errors import GeoscreenError
from geoscreen.store.cache import write_cache


def _one_line(res) -> str:
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_a_folder_with_a_ledger_and_notes_is_left_alone(tmp_path, cli):
    out = tmp_path / "work"
    out.mkdir()
    (out / "ledger.sqlite").write_bytes(b"my own ledger")
    (out / "notes.txt").write_text("three months of notes")
    line = _one_line(cli("demo", "--out", str(out)))
    assert "field '--out': already holds demo output (ledger.sqlite)" in line
    assert "--overwrite" in line
    line = _one_line(cli("demo", "--out", str(out), "--overwrite"))
    assert f"no {MARKER}: geoscreen demo did not write them" in line
    assert sorted(p.name for p in out.iterdir()) == ["ledger.sqlite", "notes.txt"]
    assert (out / "ledger.sqlite").read_bytes() == b"my own ledger"
    assert (out / "notes.txt").read_text() == "three months of notes"


def _earlier_demo(out):
    """What an earlier `geoscreen demo` left, plus a user's files next to it."""
    mark_demo_output(out, seed=0)
    write_cache(out / "cache", {"L0": np.ones((3, 2), np.float32)}, ["A", "B", "C"],
                model=DEMO_MODEL, synthetic=True)
    for name in ("ledger.sqlite", "ledger.sqlite-wal", "results.csv", "report.html"):
        (out / name).write_text("demo output")
    (out / "notes.txt").write_text("mine")
    (out / "analysis").mkdir()
    (out / "analysis" / "plot.py").write_text("mine too")


def test_overwrite_removes_exactly_the_demos_own_files(tmp_path):
    out = tmp_path / "demo"
    _earlier_demo(out)
    with pytest.raises(GeoscreenError, match="already holds demo output"):
        clear_demo_output(out, overwrite=False)
    (out / "cache" / "mine.txt").write_text("a file of mine inside the demo cache")
    with pytest.raises(GeoscreenError, match=r"holds files the demo did not write \(mine.txt\)"):
        clear_demo_output(out, overwrite=True)
    assert (out / "ledger.sqlite").exists()  # checked everything before removing anything
    (out / "cache" / "mine.txt").unlink()
    clear_demo_output(out, overwrite=True)
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert left == [MARKER, "analysis", "analysis/plot.py", "notes.txt"]


def test_a_cache_that_is_not_the_demos_is_never_removed(tmp_path):
    out = tmp_path / "demo"
    _earlier_demo(out)
    other = out / "cache"
    for p in sorted(other.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    write_cache(other, {"L0": np.ones((3, 2), np.float32)}, ["A", "B", "C"], model="scGPT")
    with pytest.raises(GeoscreenError, match="is not a demo cache"):
        clear_demo_output(out, overwrite=True)
    assert (other / "manifest.json").exists() and (out / "ledger.sqlite").exists()
