"""Queue specs straight into a ledger, test plug-in probes included (`queue add` cannot name
them: it loads no plug-ins)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from conftest import PLUGIN_DIR

from geoscreen.store.ledger import Ledger


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
