"""Probes load lazily by name: one spec imports only its probe's module (issue 19)."""

from __future__ import annotations

import json
import subprocess
import sys

from geoscreen.probes.registry import BUILTIN_MODULES, BUILTIN_PROBES, list_probes

CATALOGUE = set(BUILTIN_MODULES)


def _modules_after(code: str) -> list[str]:
    probe = ("import json, sys\n" + code + "\nprint(json.dumps(sorted(m for m in sys.modules if "
             "m.startswith('geoscreen.') or m.startswith('scipy.stats.'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_the_name_map_is_the_catalogue():
    builtin = {p.name: p.module for p in list_probes() if p.module in CATALOGUE}
    assert builtin == BUILTIN_PROBES


def test_one_probe_imports_one_catalogue_module():
    loaded = _modules_after("from geoscreen.probes.registry import get_probe\n"
                            "assert get_probe('spectrum').name == 'spectrum'")
    assert set(loaded) & CATALOGUE == {"geoscreen.probes.spectrum"}


def test_validating_a_spec_imports_only_its_probe():
    spec = {"statement": "SV1 separates A from B", "probe": "axis_separation",
            "params": {"axis": 1, "positive": "genes:A1BG,A2M"}}
    loaded = _modules_after("from geoscreen.hypotheses.loader import parse_spec\n"
                            f"parse_spec({spec!r}, 'spec')")
    assert set(loaded) & CATALOGUE == {"geoscreen.probes.separation"}
    assert "scipy.stats._stats_py" not in loaded  # scipy.stats loads when a probe runs


def test_a_lazy_module_loads_on_first_use():
    loaded = _modules_after("from geoscreen.probes import separation\n"
                            "assert separation.stats.rankdata([2, 1]).tolist() == [2.0, 1.0]")
    assert "scipy.stats._stats_py" in loaded


def test_unknown_name_loads_everything_for_the_hint():
    code = ("from geoscreen.probes.registry import get_probe\n"
            "from geoscreen.errors import GeoscreenError\n"
            "try:\n    get_probe('spectrun')\nexcept GeoscreenError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code + "import sys\n"
                          "print(sum(m in sys.modules for m in "
                          f"{sorted(CATALOGUE)!r}))"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert "did you mean 'spectrum'" in out[0] and int(out[1]) == len(CATALOGUE)
