"""Which failures are worth a rerun: transient ones may not recur, the others would.

The sandbox records a failure's reason as text.  A timeout, the memory limit, a worker killed
from outside (the OOM killer, a signal) and a cache that changed under the run say nothing about
the hypothesis: a rerun, perhaps with a larger `--timeout` or `--memory-mb`, may succeed, so the
next `campaign run` queues them again (up to `MAX_AUTO_ATTEMPTS` starts; `--retry-failed` lifts
the cap).  Bad parameters, too few genes or a probe's own error would recur and stay failed.
"""

from __future__ import annotations

import re

MAX_AUTO_ATTEMPTS = 3  # starts of one hypothesis before transient failures stop being retried

_TRANSIENT = re.compile(r"timed out after|memory limit exceeded|\bMemoryError\b|out of memory|"
                        r"worker died|killed by signal|cache changed|checksum mismatch|"
                        r"the cache is broken|the cache cannot be read on", re.IGNORECASE)


def transient_failure(reason: str) -> bool:
    """Whether a failure's reason (as the sandbox records it) may not recur on a rerun.

    Parameters
    ----------
    reason
        The hypothesis's recorded error.

    Returns
    -------
    bool
        True for timeouts, memory limits, dead workers and a changed cache.
    """
    return bool(_TRANSIENT.search(reason or ""))


def retryable(reason: str, attempts: int, *, force: bool = False) -> bool:
    """Whether the next run queues this failure again (`force`: `--retry-failed`)."""
    return transient_failure(reason) and (force or attempts < MAX_AUTO_ATTEMPTS)
