"""A dependency-free token estimate, calibrated by the token counts servers report.

Tokenizers differ between models (and local servers run many), so an exact count is not
available in general.  Characters per token is stable enough for budgeting: start from a
conservative ratio for JSON-heavy English and move it towards what the server reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_CHARS_PER_TOKEN = 3.5  # JSON, ids and numbers tokenize denser than prose (about 4)


@dataclass
class TokenCounter:
    """`count(text)` estimates tokens; `observe` learns the ratio from server usage numbers."""

    chars_per_token: float = DEFAULT_CHARS_PER_TOKEN
    min_ratio: float = 2.0
    max_ratio: float = 6.0
    weight: float = 0.5  # how far one observation moves the ratio

    def count(self, text: str) -> int:
        if not text:
            return 0
        return int(math.ceil(len(text) / self.chars_per_token))

    def observe(self, chars: int, tokens: int) -> None:
        """Calibrate from one request: `chars` sent, `tokens` the server counted."""
        if chars < 200 or tokens <= 0:
            return  # too small to say anything (chat-template overhead dominates)
        seen = min(self.max_ratio, max(self.min_ratio, chars / tokens))
        self.chars_per_token += self.weight * (seen - self.chars_per_token)
