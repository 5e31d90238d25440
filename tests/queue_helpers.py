"""Queue specs straight into a ledger, test plug-in probes included (`queue add` cannot name
them: it loads no plug-ins)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from conftest import PLUGIN_DIR
from sqlalchemy import select

from geoscreen.store.ledger import Ledger
from geoscreen.store.models import Hypothesis

# run as `python -c OPEN_LEDGER_AT_GO LEDGER GO_FILE`: open LEDGER (creating its schema) the
# moment GO_FILE appears, so that several processes race on a new ledger
OPEN_LEDGER_AT_GO = """
import sys, time
from pathlib import Path
from geoscreen.store.ledger import Ledger
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.002)
Ledger(sys.argv[1]).close()
print("ok")
"""


def queue_raw_specs(ledger: Path, raws: list[dict[str, Any]]) -> list[int]:
    """Validate `raws` (toy probes registered) and queue them; returns their ids."""
    if str(PLUGIN_DIR) not in sys.path:
        sys.path.insert(0, str(PLUGIN_DIR))
    import toy_probes  # noqa: F401  (registers the toy probes in this process)

    from geoscreen.hypotheses.loader import parse_spec

    specs = [parse_spec(r, f"spec {k}") for k, r in enumerate(raws)]
    led = Ledger(ledger)
    try:
        with led.session() as s:
            added, _ = led.add_hypotheses(s, led.campaign(s), specs)
            return [h.id for h in added]
    finally:
        led.close()


def hypotheses_by_statement(ledger: Any) -> dict[str, Hypothesis]:
    """Every hypothesis of a ledger (path or URL), by its statement."""
    led = Ledger(ledger)
    try:
        with led.session() as s:
            return {h.statement: h for h in s.scalars(select(Hypothesis))}
    finally:
        led.close()
