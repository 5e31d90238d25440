"""``python -m geoscreen.agent.cli``: the `geoscreen` command."""

import sys

from geoscreen.agent.cli import main

sys.exit(main())
