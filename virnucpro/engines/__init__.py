"""Embedding engines: ``reference`` (the original's semantics, fp32, the yardstick) and ``fast``.

Both embed kept frames with DNABERT-S and ESM-2 and classify them. The reference engine scores a
list of frames block by block (``ReferenceEngine.score``); the fast engine runs the packed work units
that ``virnucpro.plan.planner`` plans, as a source hands them (``FastEngine.run``), which is how
the run layer (``virnucpro.run``) checkpoints and shares them. ``make_engine`` picks one.
"""

from __future__ import annotations

from virnucpro.errors import InputError

ENGINES = ("reference", "fast")


def make_engine(name: str, models, device: str, precision: str = "fp32", **opts):
    if name == "reference":
        from virnucpro.engines.reference import ReferenceEngine
        return ReferenceEngine(models, device)
    if name == "fast":
        from virnucpro.engines.fast import FastEngine
        return FastEngine(models, device, precision=precision, **opts)
    raise InputError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
