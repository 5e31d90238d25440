"""The README's extraction commands, run verbatim as real subprocesses in an empty folder: both
models extract from a fresh checkout, and the two caches screen with the same spec."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

import geoscreen
from geoscreen.store.cache import open_cache

ROOT = Path(__file__).resolve().parents[1]


def readme_extraction_commands(heading: str = "## Extracting from a model") -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readme_extraction_commands_run(tmp_path):
    commands = readme_extraction_commands()
    assert commands[0].startswith("python -m geoscreen.extract.example_models")
    assert sum(c.startswith("geoscreen extract --model") for c in commands) == 2
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    for cmd in commands:
        argv = shlex.split(cmd)
        if argv[0] == "python":
            argv[0] = sys.executable
        res = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, f"{cmd}\n{res.stdout}\n{res.stderr}"
    sc, gf = open_cache(tmp_path / "caches/scgpt"), open_cache(tmp_path / "caches/geneformer")
    assert sc.manifest["metadata"]["model"] == "scgpt" and len(sc.layers) == 4
    assert gf.manifest["metadata"]["model"] == "geneformer" and len(gf.layers) == 4
    assert sc.manifest["metadata"]["cells"]["n_embedded"] == 700
    assert (tmp_path / "geneformer_last.h5ad").is_file()
    shared = sorted(set(sc.genes.symbols) & set(gf.genes.symbols))
    assert len(shared) > 700
    spec = {"statement": "axis 1 separates the first shared genes", "probe": "axis_separation",
            "params": {"positive": "genes:" + ",".join(shared[:30])}, "layers": ["last"]}
    ps = [geoscreen.run_spec(spec, c.path, work_dir=tmp_path / "w").combined.p_value
          for c in (sc, gf)]
    assert all(0 < p <= 1 for p in ps) and np.isfinite(ps).all()
    # the SAE block, run after the extraction block as the README says: activations -> SAE ->
    # atlas -> queued atlas specs -> campaign -> report
    for cmd in readme_extraction_commands("## Sparse autoencoders and feature atlases"):
        argv = [a.replace("hypotheses/catalogue/", str(ROOT / "hypotheses" / "catalogue") + "/")
                for a in shlex.split(cmd)]
        res = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, f"{cmd}\n{res.stdout}\n{res.stderr}"
    import geoscreen as gs

    rows = gs.open_ledger(tmp_path / "atlas.sqlite").hypotheses()
    assert len(rows) == 6
    assert set(rows["probe"]) == {"feature_annotation", "feature_network_coherence",
                                  "superposition", "coactivation_modules",
                                  "cross_layer_highways"}
    assert rows["status"].eq("done").all(), rows[["status"]].to_string()
    html = (tmp_path / "atlas_report.html").read_text()
    assert 'id="atlas"' in html and "features annotated" in html and "edges per feature" in html
    assert html.count("class=\"atlas-cards\"") >= 3  # feature cards: annotation and network
    assert "co-activation edges" in html and "highways from L2" in html
    # refusing to overwrite: the example models are not rewritten without --overwrite
    again = subprocess.run([sys.executable, "-m", "geoscreen.extract.example_models", "models/"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert again.stderr.count("\n") == 1
