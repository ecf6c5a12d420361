"""Embedding engines: ``reference`` (the original's semantics, fp32, the yardstick) and ``fast``.

An engine turns kept frames into features: ``embed_dna(nucleotides) -> [N, 768]`` and
``embed_protein(proteins) -> [N, 2560]`` (float32 numpy). ``make_engine`` picks one by name.
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
