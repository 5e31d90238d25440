"""Files a spec names (issue 12, item 9): a model's spec reads no file unless the user allows a
folder, every spec reads only regular files of bounded size, and no error quotes a file's
content."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from llm_server import ScriptedServer, proposals
from test_llm import GENES
from test_llm_campaign import config, table

from geoscreen.agent.campaign import CampaignConfig, run_campaign
from geoscreen.agent.worker import run_job
from geoscreen.errors import GeoscreenError
from geoscreen.hypotheses.spec import file_refs
from geoscreen.store.models import Hypothesis
from geoscreen.store.resources.api import resolve_gene_set, resolve_pair_set
from geoscreen.store.userfiles import file_policy, read_bytes, regular_file

SECRET = "SECRET-TOKEN-8d1f"


def _secret_gene_list(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "genes.txt"
    p.write_text("\n".join([*(f"G{i}" for i in range(20)), SECRET]) + "\n")
    return p


def _reads(path: Path, statement: str = "Genes from a file separate on axis 1") -> dict:
    return {"statement": statement, "probe": "axis_separation",
            "params": {"axis": 1, "positive": f"file:{path}"}, "alternative": "two-sided",
            "rationale": "a list on disk", "parents": []}


PLAIN = {"statement": "Planted genes separate from the rest on axis 2",
         "probe": "axis_separation", "params": {"axis": 2, "positive": f"genes:{GENES}"},
         "rationale": "planted", "parents": []}


def test_model_specs_read_no_file_unless_a_folder_is_allowed(small_cache, tmp_path: Path):
    secret_file = _secret_gene_list(tmp_path / "private")
    etc = _reads(Path("/etc/passwd"), "Genes of the password file separate on axis 1")
    script = [proposals(_reads(secret_file), etc, PLAIN), proposals(PLAIN)]
    ledger = tmp_path / "ledger.db"
    with ScriptedServer(script) as srv:
        summary = run_campaign(small_cache.path, ledger,
                               config(srv, 2, 3, llm={"repair_rounds": 0}))
        requests = json.dumps(srv.requests)
    assert summary.status == "done"
    hyps = {h.statement: h for h in table(ledger, Hypothesis) if h.iteration_index == 1}
    refused = [hyps[_reads(secret_file)["statement"]], hyps[etc["statement"]]]
    assert [h.status for h in refused] == ["rejected", "rejected"]
    for h in refused:
        assert "may not be read (no folder is allowed)" in h.error
    assert hyps[PLAIN["statement"]].status == "done"
    # nothing read from either file reached the model, the ledger or the errors
    assert SECRET not in requests and "root:x:0" not in requests
    led_bytes = ledger.read_bytes()
    assert SECRET.encode() not in led_bytes and b"root:x:0" not in led_bytes

    # the user allows the folder: the same proposal runs, and still nothing outside it
    ledger2 = tmp_path / "ledger2.db"
    with ScriptedServer([proposals(_reads(secret_file), etc)]) as srv:
        run_campaign(small_cache.path, ledger2,
                     config(srv, 1, 2, llm={"repair_rounds": 0},
                            allow_files=[str(secret_file.parent)]))
    hyps = {h.statement: h for h in table(ledger2, Hypothesis)}
    assert hyps[_reads(secret_file)["statement"]].status == "done"
    assert hyps[etc["statement"]].status == "rejected"
    assert "allowed folders: " + str(secret_file.parent.resolve()) in hyps[etc["statement"]].error


def test_a_missing_allowed_folder_is_refused(tmp_path: Path):
    with pytest.raises(GeoscreenError, match="--allow-files.*is not a folder"):
        CampaignConfig(allow_files=[str(tmp_path / "nope")])


def test_the_worker_enforces_the_policy_for_model_specs(small_cache, tmp_path: Path):
    """A model's spec that reached the queue anyway (an older ledger, an edited row) is still
    refused where the file would be read."""
    secret_file = _secret_gene_list(tmp_path / "private")
    (tmp_path / "allowed").mkdir()
    link = tmp_path / "allowed" / "link.txt"
    link.symlink_to(secret_file)  # a link inside the allowed folder to a file outside it
    job = {"spec": {**_reads(link), "source": "llm:test"}, "cache_path": str(small_cache.path),
           "seed": 1, "allowed_files": [str(tmp_path / "allowed")]}
    with pytest.raises(GeoscreenError) as err:
        run_job(job)
    assert "outside the folders this spec may read" in str(err.value)
    assert SECRET not in str(err.value)
    # a human spec (allowed_files None) reads it
    out = run_job({**job, "spec": _reads(secret_file), "allowed_files": None})
    assert out.combined.p_value is not None


@pytest.mark.parametrize("make,expected", [
    (lambda d: "/dev/zero", "is under /dev"),
    (lambda d: "/proc/self/environ", "is under /proc"),
    (lambda d: str(d), "is a folder"),
    (lambda d: (os.mkfifo(d / "fifo"), str(d / "fifo"))[1], "is a FIFO"),
    (lambda d: str(d / "missing.txt"), "does not exist"),
])
def test_only_regular_files_are_read_in_bounded_time(tmp_path: Path, make, expected):
    path = make(tmp_path)
    t0 = time.monotonic()
    for fn in (read_bytes, regular_file):
        with pytest.raises(GeoscreenError, match=expected):
            fn(path, field="positive")
    with pytest.raises(GeoscreenError, match=expected):
        resolve_gene_set(f"file:{path}")
    assert time.monotonic() - t0 < 5


def test_size_cap_is_checked_before_reading(tmp_path: Path):
    big = tmp_path / "big.txt"
    big.write_bytes(b"G1\n" * 1000)
    with pytest.raises(GeoscreenError, match="is 3,000 bytes; a gene list may hold at most 100"):
        read_bytes(big, what="gene list", max_bytes=100)


def test_errors_never_quote_file_content(tmp_path: Path, small_cache):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(f"G1\tG2\t0.9\nG3\tG4\t{SECRET}\n")
    with pytest.raises(GeoscreenError) as err:
        resolve_pair_set(f"file:{pairs}")
    assert "line 2: column 3 (score) is not a number" in str(err.value)
    assert SECRET not in str(err.value)
    latin = tmp_path / "latin.txt"
    latin.write_bytes(f"G1\n{SECRET}\xe9\n".encode("latin-1"))
    with pytest.raises(GeoscreenError, match="not UTF-8 text .invalid byte at offset") as err:
        resolve_gene_set(f"file:{latin}")
    assert SECRET not in str(err.value)
    # a co-expression control that is neither .npy nor a number table
    fake = tmp_path / "control.npy"
    fake.write_text(SECRET * 10)
    control = tmp_path / "control.tsv"
    control.write_text(f"G1\tG2\t0.5\nG3\tG4\t{SECRET}\n")
    for ref in (fake, control):
        spec = {"statement": "Pairs stay close beyond co-expression", "probe": "pair_proximity",
                "params": {"pairs": "pairs:G1-G2,G3-G4,G5-G6", "control": f"file:{ref}",
                           "n_permutations": 99}}
        with pytest.raises(GeoscreenError) as err:
            run_job({"spec": spec, "cache_path": str(small_cache.path), "seed": 1})
        assert SECRET not in str(err.value)
        assert str(ref) in str(err.value)


def test_file_refs_find_every_operand():
    refs = file_refs({"a": "file:/x/genes.txt", "b": 'go:GO:0005615 | file:"my list.txt"',
                      "c": {"d": ["file:has space.txt"]}, "e": "profile:not-a-file"})
    assert sorted(refs) == ["/x/genes.txt", "has space.txt", "my list.txt"]


def test_policy_allows_inside_and_refuses_outside(tmp_path: Path):
    inside = tmp_path / "ok" / "a.txt"
    inside.parent.mkdir()
    inside.write_text("G1\n")
    outside = tmp_path / "b.txt"
    outside.write_text("G1\n")
    with file_policy([str(inside.parent)]):
        assert read_bytes(inside) == b"G1\n"
        with pytest.raises(GeoscreenError, match="outside the folders"):
            read_bytes(outside)
        with pytest.raises(GeoscreenError, match="outside the folders"):
            read_bytes(inside.parent / ".." / "b.txt")
    with file_policy([]):
        with pytest.raises(GeoscreenError, match="--allow-files"):
            read_bytes(inside)
    assert read_bytes(outside) == b"G1\n"  # no policy outside the block
    np.save(tmp_path / "m.npy", np.zeros((2, 2)))
    assert regular_file(tmp_path / "m.npy").name == "m.npy"
