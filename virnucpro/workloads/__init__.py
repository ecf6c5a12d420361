"""Synthetic read workloads from real genomes, and the built-in demo sample.

``reads.simulate_reads`` / ``reads.write_reads_fasta`` draw reads from viral and bacterial genomes
that PyPI packages ship (``genomes.py``); ``sample_fasta_path()`` is the small FASTA behind the
CLI's ``--sample`` option (``virnucpro/data/sample.fa``, made by ``reads.write_sample_fasta``).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from virnucpro.errors import InputError

SAMPLE_RESOURCE = "data/sample.fa"


def sample_fasta_path() -> Path:
    """Path of the built-in demo sample (200 reads: 192 of 50-300 nt and 8 of 400-1300 nt)."""
    path = Path(str(importlib.resources.files("virnucpro").joinpath(SAMPLE_RESOURCE)))
    if not path.is_file():
        raise InputError(f"the built-in sample is missing from this installation: {path}")
    return path


__all__ = ["sample_fasta_path"]
