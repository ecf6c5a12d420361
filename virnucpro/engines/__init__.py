"""Embedding engines: ``reference`` (the original's semantics, fp32, the yardstick) and ``fast``.

Both embed kept frames with DNABERT-S and ESM-2 and classify them. The reference engine scores a
list of frames block by block (``ReferenceEngine.score``); the fast engine runs the packed work units
that ``virnucpro.plan.planner`` plans, as a source hands them (``FastEngine.run``), which is how
``virnucpro.run`` checkpoints and shares them. ``make_engine`` picks one; the fast engine computes as
its ``EngineConfig`` (``virnucpro.engines.config``) says.
"""

from __future__ import annotations

from virnucpro.engines.config import EngineConfig
from virnucpro.errors import InputError

ENGINES = ("reference", "fast")


def make_engine(name: str, models, device: str, config: EngineConfig | None = None, **opts):
    """``config``: the fast engine's settings (default ``EngineConfig()``; the reference engine is
    fp32 and has none). ``opts``: the fast engine's run arguments (token_budget, batches_per_unit,
    keep_features, measure_peak, fake_oom_tokens)."""
    if name == "reference":
        from virnucpro.engines.reference import ReferenceEngine
        return ReferenceEngine(models, device)
    if name == "fast":
        from virnucpro.engines.fast import FastEngine
        return FastEngine(models, device, config, **opts)
    raise InputError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
