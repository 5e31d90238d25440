"""Model extraction: scGPT checkpoint + AnnData cells -> a per-layer geoscreen cache.

Modules: ``checkpoint`` (read args/vocab/weights, verify every tensor, build scGPT's own
TransformerModel), ``scgpt_import`` (import scGPT's model code without its package __init__),
``data`` (stream cells from .h5ad, vocabulary overlap and count checks), ``tokens`` (scGPT's
tokenization, seeded per cell), ``runner`` (hooks, streaming per-gene means, cache writing),
``scgpt_reference`` (scGPT's own embed_data, for tests and benchmarks) and ``synthetic``
(random-weight checkpoints and small count files).  Importing this package does not import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ExtractOptions", "extract", "load_checkpoint"]


def __getattr__(name: str) -> Any:
    if name in ("ExtractOptions", "extract"):
        from . import runner

        return getattr(runner, name)
    if name == "load_checkpoint":
        from .checkpoint import load_checkpoint

        return load_checkpoint
    raise AttributeError(name)
