"""Nothing a worker writes can run code in the campaign or stop it (issue 12, item 6).

A plug-in probe writes forged replies straight into its worker's reply channel: a pickle that
would create a file when unpickled, garbage, JSON that is not an object, 400 kB of deeply nested
JSON, a truncated reply (the worker then exits, or hangs), and a header announcing a terabyte.
Each fails only its own hypothesis, with a clear reason, within the timeout; the campaign runs a
real test next to them and exits 0.
`parse_reply` is then checked on its own against every other way a frame can be wrong.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import PLUGIN_DIR
from faults import campaign_cmd, env, queue

from geoscreen.agent.executor import MAX_REPLY_BYTES, ReplyError, parse_reply
from geoscreen.store.query import list_hypotheses

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

TIMEOUT = 20  # generous: every worker must reach its probe, also on a loaded machine
EXPECTED = {  # mode -> what the hypothesis's recorded reason must say
    "pickle": "invalid reply from the worker: announces",
    "garbage": "invalid reply from the worker: announces",
    "non_dict": "invalid reply from the worker: not a JSON object (got list)",
    "deep": "invalid reply from the worker: not valid JSON (RecursionError)",
    "truncated_exit": "invalid reply from the worker: truncated (10 of 1000 bytes)",
    "truncated_hang": f"timed out after {TIMEOUT} s",
    "huge": "invalid reply from the worker: announces 1099511627776 bytes, over the 64 MiB cap",
}


@pytest.fixture(autouse=True)
def _plugins(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    import hostile_probes  # noqa: F401  (registers the probes for queueing)


def test_forged_replies_fail_their_hypothesis_and_nothing_else(small_cache, tmp_path):
    marker = tmp_path / "code-ran-in-the-campaign"
    planted = ",".join(f"G{i}" for i in range(40))
    raws = [{"statement": f"forged reply: {mode}", "probe": "hostile_reply",
             "params": {"mode": mode, "marker": str(marker)}, "layers": [0]}
            for mode in EXPECTED]
    raws.append({"statement": "a real test still runs", "probe": "axis_separation",
                 "params": {"axis": 1, "positive": f"genes:{planted}"}})
    ledger = tmp_path / "l.sqlite"
    queue(ledger, raws)
    done = subprocess.run(
        campaign_cmd(small_cache.path, ledger, "--brainstormer", "none", "--plugin",
                     "hostile_probes", "--workers", "2", "--timeout", str(TIMEOUT)),
        env=env(tmp_path / "work"), capture_output=True, text=True, timeout=300)
    rows = {r["statement"]: r for r in list_hypotheses(str(ledger))}
    clear = [m for m, want in EXPECTED.items()
             if rows[f"forged reply: {m}"]["status"] == "failed"
             and want in rows[f"forged reply: {m}"]["error"]]
    real = rows["a real test still runs"]
    print(f"\n[forged replies] faults injected: {len(EXPECTED)}; failed with the expected "
          f"reason: {len(clear)}; code run in the campaign: {int(marker.exists())}; campaign "
          f"exit code {done.returncode}; control hypothesis: {real['status']}")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert not marker.exists()
    for mode, want in EXPECTED.items():
        row = rows[f"forged reply: {mode}"]
        assert row["status"] == "failed" and want in row["error"], (mode, row["error"])
    assert real["status"] == "done" and real["p_value"] < 1e-6


def _f(body: bytes) -> bytes:
    return len(body).to_bytes(8, "big") + body


@pytest.mark.parametrize("frame,why", [
    (b"", "truncated (0 of ? bytes)"),
    (_f(b"{}")[:-1], "truncated (1 of 2 bytes)"),
    ((MAX_REPLY_BYTES + 1).to_bytes(8, "big"), "over the 64 MiB cap"),
    (_f(b"{}") + b"x", "1 bytes after the reply"),
    (_f(b"\xff\xfe"), "not valid JSON (UnicodeDecodeError)"),
    (_f(b"{not json"), "not valid JSON (JSONDecodeError)"),
    (_f(b"[" * 100_000 + b"]" * 100_000), "not valid JSON (RecursionError)"),
    (_f(b'{"ok": true, "outcome": {"layers": "x"}}'), "outcome.layers: Input should be a valid"),
    (_f(b"null"), "not a JSON object (got NoneType)"),
    (_f(b'{"ok": true}'), "'outcome' must be present exactly when 'ok' is true"),
    (_f(b'{"ok": "1", "reason": "x"}'), "ok: Input should be a valid boolean"),
    (_f(b'{"ok": false, "reason": "x", "exec": "rm -rf /"}'), "exec: Extra inputs"),
])
def test_parse_reply_refuses_what_is_not_one_valid_frame(frame, why):
    with pytest.raises(ReplyError) as err:
        parse_reply(frame)
    assert why in str(err.value)
