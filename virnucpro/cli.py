"""The `virnucpro` command: one sub-command per pipeline step, plus `predict` for all of them.

Exit codes: 0 success, 1 internal error (details in the log), 2 bad input or usage, 3 the machine
refused a write (full disk or quota, read-only file system, no permission) or, for `models download`,
the network failed: fix that and run again.

One module on purpose (~600 lines, most of it help text): every command's parser beside the one
function it calls, so `--help` and behaviour are read in one place; the commands of perf/ and
workloads/ register themselves from their own modules (PLUGIN_MODULES).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import traceback
from pathlib import Path

from virnucpro import __version__
from virnucpro.errors import ENVIRONMENT_EXIT, InputError, VirnucproError, environment_message, is_environment_error

log = logging.getLogger("virnucpro")

DESCRIPTION = """\
virnucpro: tell viral reads from the rest, as VirNucPro does, fast.

Reads are cut into 300- or 500-nt chunks, each chunk is translated in six frames, frames without
a stop codon are embedded with DNABERT-S (nucleotides) and ESM-2 3B (protein), and VirNucPro's
classifier labels each frame; a chunk is viral when its best virus score beats its best other score.

Quick start:
  virnucpro models synth --preset tiny -o models/tiny           # random test weights (not biology)
  virnucpro predict --sample -o demo-out --models models/tiny   # built-in sample reads
  virnucpro predict reads.fa.gz -o out --chunk-length 300 --models /path/to/models
"""

# Sub-commands that live in their own modules: each exposes register(subparsers).
PLUGIN_MODULES = ("virnucpro.workloads.cli", "virnucpro.perf.compare", "virnucpro.perf.baseline", "virnucpro.perf.bench",
                  "virnucpro.perf.tune")


# Output options, one convention (README "Using it"): -o/--output for a file or a path prefix,
# -o/--outdir for a directory. Earlier spellings still parse but are not shown in --help.
HIDDEN_ALIASES = frozenset({"--prefix", "--out", "--to"})


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written; shows a default only where there is one worth showing; hides
    the old spellings of output options (HIDDEN_ALIASES)."""

    def _format_action_invocation(self, action):
        shown = [o for o in action.option_strings if o not in HIDDEN_ALIASES]
        if shown == list(action.option_strings):
            return super()._format_action_invocation(action)
        saved, action.option_strings = action.option_strings, shown
        try:
            return super()._format_action_invocation(action)
        finally:
            action.option_strings = saved

    def _get_help_string(self, action):
        help_text = action.help or ""
        if ("%(default)" not in help_text and action.default not in (None, False, argparse.SUPPRESS)
                and action.option_strings and action.nargs != 0):
            help_text += " (default: %(default)s)"
        return help_text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors: one line, exit 2
        self.print_usage(sys.stderr)
        # main prints "virnucpro: error: ..."; the sub-command follows once ("predict: ...")
        command = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        raise InputError(f"{command}: {message}" if command else message)


def output_file(path: Path, flag: str = "-o/--output") -> Path:
    """A file to write: its directory must exist and it must not be a directory (InputError, exit 2)."""
    if path.is_dir():
        raise InputError(f"{flag} {path}: is a directory; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"{flag} {path}: directory {parent} does not exist (create it first)")
    return path


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models")
    g.add_argument("--models", metavar="DIR", help="model directory (default: $VIRNUCPRO_MODELS, else "
                   "~/.cache/virnucpro/models); layout: esm2_t36_3B_UR50D.pt (+ -contact-regression.pt), "
                   "DNABERT-S/, 300_model.pth, 500_model.pth")
    g.add_argument("--esm", metavar="PT", help="ESM-2 fair-esm checkpoint, overriding the directory's")
    g.add_argument("--dnabert", metavar="DIR", help="DNABERT-S HuggingFace folder, overriding the directory's")
    g.add_argument("--classifier", metavar="PTH", help="classifier (.pth or .safetensors), overriding "
                   "the directory's {C}_model.pth")
    g.add_argument("--allow-classifier-mismatch", action="store_true",
                   help="run even when the classifier was made for another chunk length (wrong labels!)")


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", formatter_class=_Formatter, help="the whole pipeline: FASTA -> predictions",
                       description="Run the whole pipeline on a FASTA or FASTQ file (plain or .gz).\n\n"
                       "Writes to OUTDIR: prediction_results.txt (per kept frame), "
                       "prediction_results_highestscore.csv (per chunk, tab-separated), read_summary.tsv "
                       "(per input read), viral_reads.fa (the reads labelled virus), run.json (manifest) and "
                       "virnucpro.log (log + telemetry).\n\n"
                       "Several samples, models loaded once: `predict a.fq.gz b.fq.gz ... -o OUTROOT` (sample ids "
                       "from the file names, without .gz and .fa/.fasta/.fna/.fq/.fastq) or `predict --samples "
                       "sheet.tsv -o OUTROOT`. Each sample gets OUTROOT/<sample>/ with the files above, and "
                       "OUTROOT/samples_summary.tsv lists every sample (sample, input, status ok|failed|not_run, "
                       "reads, chunks, kept_frames, viral_reads, seconds, message). The sample sheet is "
                       "tab-separated with a header line 'sample<TAB>path', one sample per line, '#' comment "
                       "lines allowed, relative paths relative to the sheet; ids: letters, digits, _ - . "
                       "(unique). A failed sample is named and the others run.\n\n"
                       "Exit codes: 0 done; 2 bad input, models or options (one line on stderr; with several "
                       "samples: options, sheet or an earlier run's folder, before any work); 4 several samples "
                       "ran and at least one failed (named on stderr and in samples_summary.tsv; the others' "
                       "outputs are complete); 3 the machine refused a write (full disk, permissions); 1 internal "
                       "error (details in OUTDIR/virnucpro.log); 130 interrupted.")
    p.add_argument("input", nargs="*", type=Path, help="input reads: FASTA or FASTQ (4-line), plain or gzip, "
                   "told apart by content; '-' reads standard input (a pipe, a FIFO or <(zcat ...) work too). "
                   "Several files: one sample each, into OUTROOT/<sample>/")
    p.add_argument("--samples", type=Path, metavar="SHEET", default=None,
                   help="a sample sheet (TSV: header 'sample<TAB>path', then one sample per line; '#' comments; "
                   "relative paths relative to the sheet): every sample into OUTROOT/<sample>/, models loaded once")
    p.add_argument("--sample", action="store_true", help="use the built-in sample reads as input")
    p.add_argument("-o", "--outdir", type=Path, required=True, help="output directory (created if absent); "
                   "OUTROOT with several samples. One that holds an earlier run's results or checkpoints is "
                   "refused unless --force (replace them) or --resume (continue that run; with several samples "
                   "a sample finished with the same input, models and settings is skipped)")
    p.add_argument("--force", action="store_true", help="replace the results, checkpoints and saved embeddings "
                   "of an earlier run in OUTDIR")
    p.add_argument("-t", "--threads", type=int, default=None, metavar="N",
                   help="CPU threads: torch computes on at most N threads (intra-op and inter-op pools; split "
                   "between CPU workers) and the fast engine's input loader uses at most N-1 worker processes "
                   "(default: torch's own choice, about one per core, and 2 loader processes)")
    p.add_argument("-c", "--chunk-length", type=int, choices=(300, 500), default=300,
                   help="chunk length; must match the classifier (300_model.pth or 500_model.pth)")
    _add_model_args(p)
    p.add_argument("--engine", choices=("auto", "reference", "fast"), default="auto",
                   help="reference = the original's fp32 semantics, one process (slow, the yardstick); fast = "
                   "packed batches, checkpointed work units (--resume), several GPUs; auto = fast (fp16 on a "
                   "GPU, fp32 on a CPU, where its scores are within 1e-5 of the reference's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    from virnucpro.engines.config import PRECISIONS
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="fast engine matmul precision (default: fp16 on a GPU, fp32 on a CPU; the residual "
                   "stream stays fp32). fp16 keeps "
                   ">= 99.9%% label agreement with the reference; bf16 is as fast but measured ~99.1%% "
                   "(docs/benchmarks.md). In fp16/bf16 on a GPU, ESM-2's GELU is computed in the fc1 GEMM "
                   "(its tanh approximation; env VIRNUCPRO_ESM_GELU=exact turns that off); fp32 is exact. "
                   "fp8 (experimental, GPUs with FP8 tensor cores: RTX 4090, L4, H100, H200): ESM-2's four "
                   "GEMMs per layer in e4m3 with per-token and per-channel scales, the rest as fp16; 1.19x the "
                   "fp16 ESM-2 speed but only ~89%% frame-label agreement (docs/benchmarks.md#fp8)")
    p.add_argument("--chunking", choices=("original", "fixed"), default="original",
                   help="original reproduces VirNucPro incl. its short-last-chunk quirk; fixed makes every "
                   "chunk of a long read exactly C nt")
    p.add_argument("--duplicate-ids", choices=("error", "rename"), default="error",
                   help="what to do with repeated record ids: stop with an error, or rename repeats ID_dupK")
    p.add_argument("--save-embeddings", action="store_true",
                   help="also write each kept frame's classifier input (DNABERT-S 768 + ESM-2 2560 values, "
                   "float32, ~13 KB per frame: ~11 GB per 1M reads) to OUTDIR/embeddings/: part-NNNNN.npz "
                   "files written while the GPUs work, and index.tsv (Sequence_ID, part, row); "
                   "virnucpro.io.outputs.load_embeddings(OUTDIR) reads them back in prediction order")
    p.add_argument("--block-frames", type=int, default=20000, help="reference engine: frames embedded per block")
    p.add_argument("--token-budget", type=int, default=None,
                   help="fast engine: ESM-2 tokens per packed batch (default: this GPU's tuned file, else sized "
                   "from free GPU memory, <= 65536)")
    p.add_argument("--dna-budget", type=int, default=None, metavar="NT",
                   help="fast engine: nucleotides per DNABERT-S batch, batch size x longest (default: this GPU's "
                   "tuned file, else 262144)")
    p.add_argument("--loader-workers", type=int, default=None, metavar="N",
                   help="fast engine: input-loader processes tokenising ahead of the GPU (default: this GPU's "
                   "tuned file, else 2; at most N-1 under -t N)")
    p.add_argument("--loader-prefetch", type=int, default=None, metavar="K",
                   help="fast engine: batches each loader process keeps ready (default: this GPU's tuned file, else 4)")
    p.add_argument("--no-tuned", dest="use_tuned", action="store_false",
                   help="fast engine: ignore the tuned file `virnucpro tune` wrote for this GPU (in "
                   "~/.config/virnucpro/tuned/ or $XDG_CONFIG_HOME/virnucpro/tuned/); without this flag its "
                   "values fill every option above not given, and run.json records the file and what it set")
    p.add_argument("--gpu-memory-gib", type=float, default=None,
                   help="fast engine: behave as if the GPU had this much memory (e.g. 24 for an RTX 4090): "
                   "sizes the token budget and caps each worker's GPU allocations")
    p.add_argument("--no-compile", action="store_true", help="fast engine: plain PyTorch ops between the GEMMs instead of "
                   "the Triton kernels; slower, for debugging")
    _add_scaling_args(p)   # --gpus, --workers, --resume, --batches-per-unit
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show progress")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress")
    p.add_argument("-v", "--verbose", action="store_true", help="log INFO messages to the terminal too")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from virnucpro.options import PredictOptions
    from virnucpro.pipeline import predict
    from virnucpro.report import print_summary
    given = sum((bool(args.input), args.sample, args.samples is not None))
    if given != 1:
        raise InputError("give INPUT (one or more files), --samples SHEET or --sample (exactly one of them)")
    multi = args.samples is not None or len(args.input) > 1
    if args.sample:
        from virnucpro.workloads import sample_fasta_path
        args.input = [sample_fasta_path()]
    samples = None
    if multi:
        from virnucpro.io.samplesheet import read_sheet, samples_from_paths
        samples = read_sheet(args.samples) if args.samples is not None else samples_from_paths(args.input)
    opts = PredictOptions(
        input=samples[0].path if multi else args.input[0], outdir=args.outdir, chunk_length=args.chunk_length, models=args.models, esm=args.esm,
        dnabert=args.dnabert, classifier=args.classifier, engine=args.engine, device=args.device,
        engine_config=args.engine_config, chunking=args.chunking, duplicate_ids=args.duplicate_ids,
        block_frames=args.block_frames, allow_classifier_mismatch=args.allow_classifier_mismatch,
        progress=sys.stderr.isatty() if args.progress is None else args.progress, verbose=args.verbose,
        gpus=args.gpus, workers=args.workers, resume=args.resume, batches_per_unit=args.batches_per_unit,
        skip_failing_units=args.skip_failing_units, save_embeddings=args.save_embeddings, faults=args.faults,
        token_budget=args.token_budget, dna_budget=args.dna_budget, use_tuned=args.use_tuned,
        segment_reads=args.segment_reads, force=args.force, threads=args.threads)
    if multi:
        from virnucpro.io.paths import SAMPLES_SUMMARY
        from virnucpro.report import print_samples
        from virnucpro.samples import SAMPLES_FAILED_EXIT, any_failed, predict_samples
        results = predict_samples(opts, samples)
        print_samples([r.row() for r in results], args.outdir / SAMPLES_SUMMARY)
        return SAMPLES_FAILED_EXIT if any_failed(results) else 0
    summary = predict(opts)
    if "wall_s" not in summary:  # a torchrun rank other than 0: rank 0 merges and writes the outputs
        print(f"rank {summary.get('rank')}: work units checkpointed in {summary.get('outdir')}; rank 0 writes the outputs")
        return 0
    print_summary(summary)
    return 0


def _add_prep_args(p: argparse.ArgumentParser) -> None:
    """chunk's and translate's options shared with predict."""
    p.add_argument("-c", "--chunk-length", type=int, choices=(300, 500), default=300,
                   help="chunk length in nt (300 or 500, as the published classifiers)")
    p.add_argument("--chunking", choices=("original", "fixed"), default="original",
                   help="original reproduces VirNucPro incl. its short-last-chunk quirk; fixed makes every "
                   "chunk of a long read exactly C nt")
    p.add_argument("--duplicate-ids", choices=("error", "rename"), default="error",
                   help="what to do with repeated record ids: stop with an error, or rename repeats ID_dupK")


def _add_chunk(sub) -> None:
    p = sub.add_parser("chunk", formatter_class=_Formatter, help="step 1: cut reads into chunks (FASTA out)",
                       description="Cut each read into chunks of the chunk length, as VirNucPro does, and "
                       "write them as FASTA with ids {read}_chunk_{k}.")
    p.add_argument("input", type=Path, help="input FASTA (plain or gzip)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE",
                   help="chunks FASTA to write (gzip-compressed when FILE ends in .gz); its directory must exist")
    _add_prep_args(p)
    p.set_defaults(func=cmd_chunk)


@contextlib.contextmanager
def _text_output(path: Path):
    """A text handle on ``path``, written atomically; gzip-compressed (reproducibly: no name, no
    time stamp) when the name ends in ``.gz``."""
    from virnucpro.core.files import atomic_write
    if not path.name.endswith(".gz"):
        with atomic_write(path) as fh:
            yield fh
        return
    import gzip
    import io
    with atomic_write(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            io.TextIOWrapper(gz, encoding="utf-8", newline="\n") as fh:
        yield fh


def cmd_chunk(args) -> int:
    from virnucpro.prep.chunking import chunk_records
    from virnucpro.io.fasta import read_fasta
    output_file(args.output)
    records = read_fasta(args.input, args.duplicate_ids)
    n = 0
    with _text_output(args.output) as fh:
        for cid, _, seq in chunk_records(records, args.chunk_length, args.chunking):
            fh.write(f">{cid}\n{seq}\n")
            n += 1
    print(f"{len(records)} reads -> {n} chunks -> {args.output}")
    return 0


def _add_translate(sub) -> None:
    p = sub.add_parser("translate", formatter_class=_Formatter,
                       help="steps 1-2: chunk + six-frame translate; write kept frames",
                       description="Chunk reads, translate six frames and keep frames without stop codons. "
                       "Writes PREFIX_nucleotide.fa (the 3p+1-nt slices DNABERT-S embeds) and "
                       "PREFIX_protein.faa (the proteins ESM-2 embeds), ids {read}_chunk_{k}{F1..R3}.")
    p.add_argument("input", type=Path, help="input FASTA (plain or gzip)")
    p.add_argument("-o", "--output", "--prefix", dest="output", required=True, metavar="PREFIX",
                   help="output path prefix: writes PREFIX_nucleotide.fa and PREFIX_protein.faa; a directory "
                   "(existing, or written with a trailing /) writes DIR/INPUT_nucleotide.fa, INPUT being the "
                   "input's name without its extensions. The directory must exist")
    _add_prep_args(p)
    p.set_defaults(func=cmd_translate)


def translate_prefix(output: str, input_path: Path) -> Path:
    """translate's -o: a prefix, or a directory (existing, or ``dir/``) to write into, named after the input."""
    if output.endswith(("/", os.sep)) or Path(output).is_dir():
        stem = input_path.name
        for ext in (".gz", ".fasta", ".fas", ".fna", ".fa", ".fastq", ".fq"):
            stem = stem[: -len(ext)] if stem.endswith(ext) and len(stem) > len(ext) else stem
        return Path(output) / stem
    return Path(output)


def cmd_translate(args) -> int:
    from virnucpro.io.fasta import read_fasta
    from virnucpro.core.files import atomic_write
    from virnucpro.prep.frames import chunk_and_translate
    prefix = translate_prefix(args.output, args.input)
    nuc = output_file(Path(f"{prefix}_nucleotide.fa"))
    prot = output_file(Path(f"{prefix}_protein.faa"))
    records = read_fasta(args.input, args.duplicate_ids)
    chunks, frames = chunk_and_translate(records, args.chunk_length, args.chunking)
    with atomic_write(nuc) as fn, atomic_write(prot) as fp:
        for fid, _, n, p in frames:
            fn.write(f">{fid}\n{n}\n")
            fp.write(f">{fid}\n{p}\n")
    print(f"{len(records)} reads -> {len(chunks)} chunks -> {len(frames)} kept frames -> {nuc}, {prot}")
    return 0


def _add_classify(sub) -> None:
    p = sub.add_parser("classify", formatter_class=_Formatter,
                       help="step 4: label saved features with a classifier (after predict --save-embeddings)",
                       description="Label the frames of a `virnucpro predict --save-embeddings` run again, "
                       "from the features it kept (SOURCE/embeddings/), with another classifier -- e.g. one "
                       "trained on those features -- without embedding anything again. Writes "
                       "prediction_results.txt and prediction_results_highestscore.csv (the original's "
                       "formats) and run.json to OUTDIR.")
    p.add_argument("source", type=Path, help="output directory of a predict run made with --save-embeddings")
    p.add_argument("-o", "--outdir", type=Path, required=True, help="where to write (not SOURCE)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--classifier", metavar="PTH", type=Path,
                   help="classifier (.pth in the original layout, or .safetensors)")
    g.add_argument("--models", metavar="DIR", help="model directory: its {C}_model.pth for the run's chunk length")
    p.add_argument("-c", "--chunk-length", type=int, choices=(300, 500), default=None,
                   help="the features' chunk length (default: SOURCE's run.json)")
    p.add_argument("--allow-classifier-mismatch", action="store_true",
                   help="run even when the classifier was made for another chunk length (wrong labels!)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (the classifier is small: cpu is fine)")
    p.set_defaults(func=cmd_classify)


def cmd_classify(args) -> int:
    from virnucpro.options import resolve_device
    from virnucpro.reclassify import classify_saved
    s = classify_saved(args.source, args.outdir, args.classifier, args.models, args.chunk_length,
                       args.allow_classifier_mismatch, resolve_device(args.device))
    print(f"{s['frames']:,} frames ({s['parts']} parts) -> {s['viral_frames']:,} viral frames, "
          f"{s['viral_chunks']:,} of {s['chunks_with_frames']:,} chunks viral, in {s['wall_s']:.2f} s")
    print(f"outputs: {args.outdir}/prediction_results.txt, {args.outdir}/prediction_results_highestscore.csv")
    if s["synthetic"]:
        from virnucpro.io.outputs import SYNTHETIC_WARNING
        print(f"WARNING: {SYNTHETIC_WARNING}")
    return 0


def _add_models(sub) -> None:
    p = sub.add_parser("models", formatter_class=_Formatter,
                       help="download the real models; check a model dir; write synthetic models")
    msub = p.add_subparsers(dest="models_cmd", metavar="{download,check,synth}", parser_class=_Parser)
    s = msub.add_parser("synth", formatter_class=_Formatter, help="write a seeded random-weight model set",
                        description="Write seeded random weights in exactly the real formats (fair-esm "
                        "checkpoint, DNABERT-S HF folder with a BPE tokenizer, classifier .pth in the original "
                        "pickle layout + .safetensors). tiny: CPU-test size; full: the real architectures "
                        "(ESM-2 3B: ~5.7 GB fp16). Outputs made with them are always labelled SYNTHETIC.")
    s.add_argument("--preset", choices=("tiny", "full", "tiny-outliers", "full-outliers"), default="tiny",
                   help="tiny: CPU-test size (a few MB); full: the real architectures (~5.7 GB); *-outliers: "
                   "the same with trained transformers' outlier channels planted in ESM-2 (virnucpro/models/esm2_outliers.py)")
    s.add_argument("--seed", type=int, default=0, help="random seed: the same preset and seed give the same files")
    s.add_argument("-o", "--outdir", "--out", dest="outdir", type=Path, required=True, metavar="DIR",
                   help="directory to write the model set into (created if absent)")
    s.add_argument("--device", default="auto", help="device for calibrating the classifier on the sample")
    s.add_argument("--calibration-frames", type=int, default=256)
    s.set_defaults(func=cmd_models_synth)
    c = msub.add_parser("check", formatter_class=_Formatter, help="read every model file in full, load each; print fingerprints",
                        description="Find the model set, read every file in full (its sha256, compared with the "
                        "hash `models download` recorded, where there is one) and load each as a run does "
                        "(zip records' CRCs, weights-only unpickling, tokenizer, classifier for the chunk "
                        "length). Exit 0 when all are sound; exit 2 naming each damaged or missing file.")
    c.add_argument("-c", "--chunk-length", type=int, choices=(300, 500), default=300)
    _add_model_args(c)
    c.set_defaults(func=cmd_models_check)
    d = msub.add_parser("download", formatter_class=_Formatter, help="download the real models (~6.2 GB), checked",
                        description="Download the real models into DIR, in the layout --models DIR reads:\n"
                        "  esm2_t36_3B_UR50D.pt + -contact-regression.pt  fair-esm's URLs            ~5.7 GB\n"
                        "  DNABERT-S/ (config.json, pytorch_model.bin, tokenizer.json)\n"
                        "                                 Hugging Face zhihan1996/DNABERT-S         ~470 MB\n"
                        "  300_model.pth, 500_model.pth   GitHub Li-Jing-1997/VirNucPro (a commit)  ~7 MB each\n\n"
                        "Partial downloads resume (run the command again); every file is size-checked, "
                        "sha256-checked where the publisher lists one, loaded as a run loads it, renamed into "
                        "place only when whole and good, and recorded (DIR/virnucpro-models.json) for "
                        "`virnucpro models check`.\n\n"
                        "Exit codes: 0 done; 2 a file not found (HTTP 404), of the wrong size or sha256, or "
                        "that does not load (removed); 3 network trouble (offline, refused, timeout, server "
                        "error): run again to resume.")
    d.add_argument("-o", "--outdir", "--to", dest="outdir", metavar="DIR", type=Path, default=None,
                   help="where to put them (default: $VIRNUCPRO_MODELS, else ~/.cache/virnucpro/models, "
                   "which predict reads without --models)")
    d.add_argument("--base-url", metavar="URL", help="fetch every file from URL/<its path in DIR> instead "
                   "(an institutional mirror with the same layout)")
    d.add_argument("--only", action="append", choices=("esm2", "dnabert", "classifiers"),
                   help="only this group (repeatable; default: all three)")
    d.add_argument("--timeout", type=float, default=60, help="seconds without an answer before a transfer "
                   "counts as broken off")
    g = d.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show progress")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress")
    d.set_defaults(func=cmd_models_download)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def cmd_models_download(args) -> int:
    import contextlib
    from virnucpro.models import download, layout
    to = layout.models_dir(args.outdir)
    show = sys.stderr.isatty() if args.progress is None else args.progress
    with contextlib.ExitStack() as stack:
        bar = None
        if show:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)
            prog = stack.enter_context(Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                                                TransferSpeedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                                console=Console(stderr=True)))

            def bar(name, total):
                task = prog.add_task(name, total=total)
                return lambda done, tot: prog.update(task, completed=done, total=tot)
        download.download(to, args.base_url, tuple(args.only or download.GROUPS), bar=bar, timeout=args.timeout,
                          say=lambda line: print(line, flush=True))
    print(f"models in {to}: `virnucpro predict READS -o OUT --models {to}`"
          f"{'' if args.outdir else ' (or without --models)'}; recheck with `virnucpro models check --models {to}`")
    return 0


def cmd_models_synth(args) -> int:
    from virnucpro.models.synth import synth
    from virnucpro.options import resolve_device
    marker = synth(args.outdir, args.preset, args.seed, resolve_device(args.device), args.calibration_frames)
    cal = ", ".join(f"{c} nt: {s['virus_share']:.0%} virus" for c, s in marker["calibration"].items())
    print(f"wrote SYNTHETIC {args.preset} model set (seed {args.seed}) to {args.outdir} in {marker['seconds']} s "
          f"[calibrated on the sample: {cal}]")
    return 0


def cmd_models_check(args) -> int:
    from virnucpro.models import layout, verify

    def show(fc) -> None:
        how = "matches the download record" if fc.recorded else "read in full and loaded"
        state = "ok " if not fc.problem else "BAD"
        print(f"{state} {fc.path}  {fc.size:,} bytes  sha256 {fc.sha256[:16]}  "
              f"{fc.problem if fc.problem else how}", flush=True)

    ms = layout.resolve(args.models, args.chunk_length, args.esm, args.dnabert, args.classifier, fingerprint=False)
    verify.require_sound(verify.check_model_set(ms, args.chunk_length, args.allow_classifier_mismatch, show))
    ms.fingerprints = layout.fingerprints(ms)
    for k, v in ms.describe().items():
        print(f"{k:12s} {v}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="virnucpro", description=DESCRIPTION, formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"virnucpro {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_predict(sub)
    _add_chunk(sub)
    _add_translate(sub)
    _add_classify(sub)
    _add_models(sub)
    for mod in PLUGIN_MODULES:
        try:
            module = importlib.import_module(mod)
        except ImportError as exc:
            if exc.name != mod:  # the module exists but is broken: say so loudly
                raise
            continue
        module.register(sub)
    return parser


class _SilentParser(argparse.ArgumentParser):
    """Raises ValueError instead of printing a usage error (the real parser reports it)."""

    def error(self, message: str):
        raise ValueError(message)


def _prestart_workers(argv: list[str]) -> None:
    """``predict`` that will start worker processes: start their fork server first thing (it imports
    torch while this process builds the parser and imports it too). A minimal parse of the options
    that decide it; the real parse (and its errors) comes after."""
    if not argv or argv[0] != "predict":
        return
    p = _SilentParser(add_help=False)
    p.add_argument("--engine", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--gpus", default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--skip-failing-units", action="store_true")
    try:
        known, _ = p.parse_known_args(argv[1:])
    except (SystemExit, ValueError):
        return
    from virnucpro.run.devices import likely_worker_processes
    from virnucpro.run.spawn import prestart_workers
    if likely_worker_processes(known.engine, known.device, known.gpus, known.workers, known.skip_failing_units):
        prestart_workers()


def run(argv: list[str] | None = None, faults=None) -> None:
    """The ``virnucpro`` command (console script and ``python -m virnucpro``): ``main``, then exit at
    once. A run's outputs are written and closed by then; what is skipped is the interpreter's
    teardown of the run's objects and of torch (0.76-0.81 s after a 650,000-read run, docs/benchmarks.md
    #cpu-exit), not any work:
    worker processes are joined and multiprocessing's temp directory removed first. ``faults``: a
    ``virnucpro.run.faults.FaultPlan`` for ``predict`` (tests/fault_launcher.py). SIGTERM (docker
    stop, systemd, Slurm) ends the command as Ctrl-C does (exit 130); a run's embedding stops after
    its current batch on either (virnucpro.run.worker.install_stop_handlers)."""
    import signal
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    code = main(argv, faults)
    try:
        import multiprocessing.util
        multiprocessing.util._exit_function()   # join children, remove the temp dir (what atexit would do)
    except Exception:  # noqa: BLE001 - private API; a normal exit then
        raise SystemExit(code) from None
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe
            pass
    os._exit(code)


def main(argv: list[str] | None = None, faults=None) -> int:
    args = None
    try:
        words = sys.argv[1:] if argv is None else list(map(str, argv))
        if words[:1] == ["predict"]:   # its processes' multiprocessing temp dirs in one folder of the run's
            from virnucpro.core.mptemp import use_run_tempdir
            use_run_tempdir()
        _prestart_workers(words)
        from virnucpro.core.telemetry import setup_logging
        setup_logging(None)  # warnings before a run's log exists still read "virnucpro: WARNING: ..."
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        args.faults = faults
        if hasattr(args, "precision"):   # the commands that run the fast engine (predict, bench)
            args.engine_config = engine_config_from_env(args)
        return int(args.func(args) or 0)
    except VirnucproError as exc:
        print(f"virnucpro: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:   # a stopped run says how far it got (virnucpro.run.fast.stopped_line)
        print(f"virnucpro: {str(exc) or 'interrupted'}", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: short message here, the full traceback in the run's log
        if is_environment_error(exc):   # the machine's, not a bug
            _log_traceback_to_files()
            print(f"virnucpro: error: {environment_message(exc, _resumable(args))}", file=sys.stderr)
            return ENVIRONMENT_EXIT
        _log_traceback_to_files()
        print(f"virnucpro: internal error: {type(exc).__name__}: {exc} (details in the run's virnucpro.log, or rerun with VIRNUCPRO_DEBUG=1; "
              "please report it)", file=sys.stderr)
        return 1


def _resumable(args) -> bool:
    """``predict`` into an output directory that holds finished work units: --resume helps."""
    if getattr(args, "command", None) != "predict" or getattr(args, "outdir", None) is None:
        return False
    from virnucpro.run.rundir import RunDir
    return RunDir(args.outdir).has_checkpoints()


# Experiment switches of the fast engine: environment variables fill these EngineConfig fields, here
# and nowhere else (never inside virnucpro/models or virnucpro/engines).
ENGINE_ENV = {
    "VIRNUCPRO_ESM_GELU": "gelu: exact | tanh-epilogue (the default; fp16/bf16 on a GPU only)",
    "VIRNUCPRO_DNABERT_COMPILE": "dnabert_compile: 1 | 0 (the default)",
    "VIRNUCPRO_TORCH_PROFILE": "profile: PATH[:FIRST[:COUNT]], a torch.profiler trace of those batches",
}


def engine_config_from_env(args, environ=None):
    """The fast engine's EngineConfig from a command's options (--precision, --no-compile,
    --gpu-memory-gib, --loader-workers, --loader-prefetch where it has them) and the ENGINE_ENV switches of ``environ``
    (default: this process's environment)."""
    from virnucpro.engines.config import GELU_CHOICES, EngineConfig, ProfileSpec
    env = os.environ if environ is None else environ
    gelu = env.get("VIRNUCPRO_ESM_GELU", "tanh-epilogue")
    if gelu not in GELU_CHOICES:
        raise InputError(f"VIRNUCPRO_ESM_GELU={gelu!r}: choose one of {', '.join(GELU_CHOICES)}")
    dna_compile = env.get("VIRNUCPRO_DNABERT_COMPILE", "0")
    if dna_compile not in ("0", "1"):
        raise InputError(f"VIRNUCPRO_DNABERT_COMPILE={dna_compile!r}: 1 (compile) or 0 (the default)")
    profile = env.get("VIRNUCPRO_TORCH_PROFILE", "")
    # the loader's processes and prefetch as given (else a tuned file's or the defaults: -t N caps
    # the processes at N-1 once they are settled, virnucpro.options.choose_engine)
    extra = {k: getattr(args, k) for k in ("loader_workers", "loader_prefetch") if getattr(args, k, None) is not None}
    # no --precision: "auto", settled by the device (fp16 on a GPU, fp32 on a CPU: pipeline.choose_engine)
    return EngineConfig(precision=args.precision or "auto", esm_kernels="eager" if getattr(args, "no_compile", False) else "auto",
                        gelu=gelu, dnabert_compile=dna_compile == "1", gpu_memory_gib=getattr(args, "gpu_memory_gib", None),
                        profile=ProfileSpec.parse(profile) if profile else None, **extra)


def _log_traceback_to_files() -> None:
    """Write the traceback to the run's log file only (stderr gets one line); with no log file
    yet, to stderr when VIRNUCPRO_DEBUG is set."""
    import os
    files = [h for h in logging.getLogger("virnucpro").handlers if isinstance(h, logging.FileHandler)]
    text = traceback.format_exc()
    for h in files:
        try:
            h.stream.write(f"internal error:\n{text}\n")
            h.flush()
        except OSError:   # the log's own disk is full or gone read-only: the one line on stderr must still come
            pass
    if not files and os.environ.get("VIRNUCPRO_DEBUG"):
        sys.stderr.write(text)


def _add_scaling_args(p) -> None:
    """predict's options for workers, GPUs and checkpoints (virnucpro.run)."""
    g = p.add_argument_group("scaling and checkpoints (fast engine)")
    g.add_argument("--gpus", default=None, metavar="all|N|0,2,...",
                   help="GPUs to use: all visible (the default with a CUDA device), the first N, or a list")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes in all, spread over the GPUs (default: one per GPU; with "
                   "--device cpu, 1). Two on one GPU share it")
    g.add_argument("--resume", action="store_true",
                   help="continue a killed or stopped run in the same OUTDIR: finished work units are "
                   "kept, only the rest is computed; refused if input, models or settings differ")
    g.add_argument("--skip-failing-units", action="store_true",
                   help="a work unit that kills its worker 3 times is skipped instead of stopping the run: "
                   "its reads are listed in skipped_reads.tsv and labelled 'skipped' in read_summary.tsv")
    g.add_argument("--batches-per-unit", type=int, default=None, metavar="K",
                   help="packed ESM-2 batches per work unit (the unit of claiming and checkpointing; default 8)")
    g.add_argument("--segment-reads", type=int, default=None, metavar="N",
                   help="reads chunked, translated and planned at a time while the GPUs already embed the "
                   "planned units (default 65536); part of a checkpoint's identity")
