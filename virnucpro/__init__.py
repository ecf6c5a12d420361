"""virnucpro: the fast, faithful way to run VirNucPro.

Data flow (one module per stage):
    fasta (read) -> chunking -> translate (six frames, keep stop-free) ->
    engines (embed: DNABERT-S + ESM-2) -> classify (MLP, consensus) -> outputs (write)
Models live in ``virnucpro.models``; telemetry beside the pipeline in ``virnucpro.core.telemetry``.
"""

__version__ = "0.1.0"
