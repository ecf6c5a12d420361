"""CLI hook: ``virnucpro reads synth`` (the CLI loads ``register`` from this module)."""

from virnucpro.workloads.reads import register

__all__ = ["register"]
