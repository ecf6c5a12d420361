"""Every file a run writes in its output directory, named once.

``Paths(outdir).predictions`` etc. for the directory a command writes; the module constants are the
bare names, for readers of another directory (``virnucpro compare``, the performance gate, a
baseline) and for messages. The formats are described in ``virnucpro.io.outputs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PREDICTIONS = "prediction_results.txt"                 # per kept frame (the original's format)
CONSENSUS = "prediction_results_highestscore.csv"      # per chunk (tab-separated despite its name)
READ_SUMMARY = "read_summary.tsv"                      # per input read
VIRAL_READS = "viral_reads.fa"                         # the reads labelled virus (FASTA)
SKIPPED_READS = "skipped_reads.tsv"                    # only after --skip-failing-units gave up on a unit
RUN_JSON = "run.json"                                  # the run's manifest
LOG_NAME = "virnucpro.log"                             # log and telemetry (rank 0 / the only process)
SYNTHETIC_NOTE = "SYNTHETIC_MODELS.txt"                # only when the models were synthetic
EMBEDDINGS = "embeddings"                              # only with --save-embeddings: parts and index
EMBEDDING_INDEX = "index.tsv"                          # in EMBEDDINGS: Sequence_ID, part, row
EMBEDDING_PART_GLOB = "part-*.npz"
RUN_DIRNAME = ".virnucpro-run"                         # checkpoints of a resumable run (virnucpro.run)
STAGING_DIRNAME = ".virnucpro-staging"                 # the next output set, until it is moved into place
LOCK_NAME = ".virnucpro.lock"                          # held (flock) by the run writing the directory
SAMPLES_SUMMARY = "samples_summary.tsv"                # multi-sample predict: in OUTROOT, one row per sample

# The output set: the files a run writes for its reader, which appear all at once or not at all
# (virnucpro.io.outset); RUN_JSON is its commit record, moved into place last. EMBEDDINGS is a folder
# whose parts and index belong to the set (a user's own files in it do not).
SET_FILES = (PREDICTIONS, CONSENSUS, READ_SUMMARY, VIRAL_READS, SKIPPED_READS, SYNTHETIC_NOTE)


def embedding_part_name(k: int) -> str:
    return f"part-{k:05d}.npz"


def rank_log_name(rank: int) -> str:
    """The log of a torchrun rank; rank 0 writes ``LOG_NAME``."""
    return LOG_NAME if rank == 0 else f"virnucpro.rank{rank}.log"


@dataclass(frozen=True)
class Paths:
    """The files of one output directory."""

    outdir: Path          # a str is taken too

    def __post_init__(self) -> None:
        object.__setattr__(self, "outdir", Path(self.outdir))

    @property
    def predictions(self) -> Path:
        return self.outdir / PREDICTIONS

    @property
    def consensus(self) -> Path:
        return self.outdir / CONSENSUS

    @property
    def read_summary(self) -> Path:
        return self.outdir / READ_SUMMARY

    @property
    def viral_reads(self) -> Path:
        return self.outdir / VIRAL_READS

    @property
    def skipped_reads(self) -> Path:
        return self.outdir / SKIPPED_READS

    @property
    def run_json(self) -> Path:
        return self.outdir / RUN_JSON

    @property
    def log(self) -> Path:
        return self.outdir / LOG_NAME

    def rank_log(self, rank: int) -> Path:
        return self.outdir / rank_log_name(rank)

    @property
    def synthetic_note(self) -> Path:
        return self.outdir / SYNTHETIC_NOTE

    @property
    def embeddings(self) -> Path:
        return self.outdir / EMBEDDINGS

    @property
    def embedding_index(self) -> Path:
        return self.embeddings / EMBEDDING_INDEX

    def embedding_part(self, k: int) -> Path:
        return self.embeddings / embedding_part_name(k)

    @property
    def run_dir(self) -> Path:
        return self.outdir / RUN_DIRNAME

    @property
    def run_embeddings(self) -> Path:
        """Where a fast run's embeddings parts wait, beside its checkpoints, until the output set
        that indexes them is committed."""
        return self.run_dir / EMBEDDINGS

    @property
    def staging(self) -> Path:
        return self.outdir / STAGING_DIRNAME

    @property
    def lock(self) -> Path:
        return self.outdir / LOCK_NAME
