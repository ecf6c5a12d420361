"""The `virnucpro` command line: help texts, exit codes, one-line errors, nothing half-written.

Exit codes: 0 ok, 2 bad input or usage (one line ``virnucpro: error: ...`` on stderr, no traceback),
1 internal error (one line; the traceback goes to the run's log), 130 interrupted.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import pickle
import shutil
import time
from pathlib import Path

import pytest
import torch

from virnucpro.cli import build_parser

PRED, CONS, SUMMARY = "prediction_results.txt", "prediction_results_highestscore.csv", "read_summary.tsv"
OPEN_SEQ = "GCC" * 50  # no stop codon in any of the six frames: every frame is kept


# --------------------------------------------------------------------------- helpers

def assert_one_line_error(res, *needles: str, code: int = 2) -> str:
    """Exit ``code``, exactly one non-empty stderr line, starting ``virnucpro: error:``, naming
    every needle; no traceback. Returns the line."""
    assert res.code == code, f"expected exit {code}:\n{res}"
    assert "Traceback" not in res.err, f"a traceback reached the user:\n{res}"
    lines = res.err_lines()
    assert len(lines) == 1, f"expected ONE line on stderr, saw {len(lines)}:\n{res}"
    line = lines[0]
    assert line.startswith("virnucpro: error:"), f"stderr line does not start with 'virnucpro: error:': {line!r}"
    for n in needles:
        assert n in line, f"the error should mention {n!r}: {line!r}"
    return line


def assert_nothing_written(outdir: Path) -> None:
    left = sorted(p.name for p in outdir.iterdir()) if outdir.exists() else []
    assert not left, f"a refused run wrote into {outdir}: {left}"


def write_fasta(path: Path, records: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f">{rid}\n{seq}\n" for rid, seq in records))
    return path


@pytest.fixture
def small_fa(tmp_path) -> Path:
    return write_fasta(tmp_path / "small.fa", [("r1", OPEN_SEQ), ("r2", "ACGT" * 40)])


def predict_args(inp, out, models, *extra) -> list:
    return ["predict", inp, "-o", out, "--models", models, "--device", "cpu", "--no-progress", *extra]


def _subcommand_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append(prefix + (name,))
                paths.extend(_subcommand_paths(sub, prefix + (name,)))
    return paths


# --------------------------------------------------------------------------- help

KEY_OPTIONS = {
    (): ["predict", "models", "chunk", "translate", "--version"],
    ("predict",): ["--chunk-length", "--outdir", "--models", "--engine", "--device", "--sample", "--chunking",
                   "--duplicate-ids", "--classifier", "--allow-classifier-mismatch", "300", "500"],
    ("chunk",): ["--chunk-length", "--output", "--chunking", ".gz"],
    ("translate",): ["--chunk-length", "--output", "PREFIX", "nucleotide", "protein"],
    ("models",): ["synth", "check"],
    ("models", "synth"): ["--preset", "--seed", "--outdir", "tiny", "full"],
    ("models", "check"): ["--models", "--chunk-length", "--classifier"],
}


def test_every_subcommand_has_help(run_cli):
    paths = _subcommand_paths(build_parser())
    assert set(KEY_OPTIONS) - {()} <= set(paths), f"sub-commands missing: {set(KEY_OPTIONS) - set(paths) - {()}}"
    for path in [(), *paths]:
        res = run_cli(*path, "--help")
        assert res.code == 0, f"`virnucpro {' '.join(path)} --help`:\n{res}"
        assert "usage:" in res.out and len(res.out) > 200, f"`{' '.join(path)} --help` says too little:\n{res.out}"
        for opt in KEY_OPTIONS.get(path, []):
            assert opt in res.out, f"`virnucpro {' '.join(path)} --help` does not mention {opt}"


def test_no_command_prints_help_and_exits_2(run_cli):
    res = run_cli()
    assert res.code == 2 and "predict" in res.out + res.err, str(res)


# --------------------------------------------------------------------------- bad input files

BAD_INPUTS = {
    "missing": (None, ["not found"]),
    "empty": (b"", ["empty"]),
    "blank_lines_only": (b"\n\n  \n", ["empty"]),
    "fastq_multiline": (b"@r1\nACGT\nACGT\n+\nIIIIIIII\n", ["line 3", "multi-line"]),   # FASTQ is read: 4-line form
    "binary": (bytes(range(256)) * 4, ["not a FASTA"]),
    "text": (b"hello world\n", ["not a FASTA"]),
    "no_sequences": (b">a\n>b desc\n", ["empty sequence"]),
    "empty_header": (b">\nACGT\n", ["header"]),
    "protein_fasta": (b">p1\nMKWVTFISLLLLFSSAYS\n", ["p1", "not nucleotide"]),
    "gz_of_bad_fastq": (gzip.compress(b"@r1\nACGT\n+\nIIII\n@r2\nACGT\n+\nIII\n"), ["line 8", "r2", "quality"]),
    "protein_with_x": (b">p1\nMKXWVTFISLLX\n", ["p1", "not nucleotide"]),   # X alone is accepted, protein is not
}


@pytest.mark.parametrize("engine", [["--engine", "reference"], []], ids=["reference", "auto"])
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, engine, tmp_path, tiny_models, run_cli):
    """The fast engine (auto's) reads the input in a thread and may start before it is all read: a
    refused input leaves nothing behind either way."""
    content, needles = BAD_INPUTS[case]
    inp = tmp_path / f"{case}.fa"
    if content is not None:
        inp.write_bytes(content)
    out = tmp_path / "out"
    res = run_cli(*predict_args(inp, out, tiny_models, *engine))
    assert_one_line_error(res, *needles)
    assert_nothing_written(out)


@pytest.fixture
def refuse_after_first_unit(monkeypatch):
    """The input reader gives the file's records, then -- once the run has checkpointed a unit of
    them -- refuses the rest (as a bad record at the end of a long file would). Returns a list that
    gets the unit files seen at that moment."""
    from virnucpro.io import fasta
    from virnucpro.errors import InputError
    real, seen = fasta.iter_fasta_blocks, []

    def blocks(path, progress=None):
        yield from real(path, lambda f: progress(f / 2) if progress else None)   # as if half was read
        units = Path(os.environ["VIRNUCPRO_TEST_OUT"]) / ".virnucpro-run" / "units"
        deadline = time.time() + 120
        while time.time() < deadline and not seen:
            seen.extend(sorted(p.name for p in units.glob("unit_*.npz")) if units.is_dir() else [])
            time.sleep(0.02)
        raise InputError(f"{path}: record 'bad' holds characters that are not nucleotide codes: 'J'")

    monkeypatch.setattr(fasta, "iter_fasta_blocks", blocks)
    return seen


@pytest.mark.parametrize("outdir_state", ["absent", "empty"])
def test_input_refused_after_units_were_written_leaves_nothing(outdir_state, tmp_path, tiny_models, run_cli,
                                                              refuse_after_first_unit, monkeypatch):
    """A fresh fast run embeds the first reads while the rest is read; a bad record found later
    stops it, and everything it wrote goes (the output directory it created, or the empty one's
    new contents)."""
    out = tmp_path / "out"
    if outdir_state == "empty":
        out.mkdir()
    monkeypatch.setenv("VIRNUCPRO_TEST_OUT", str(out))
    inp = write_fasta(tmp_path / "in.fa", [(f"r{i}", OPEN_SEQ) for i in range(12)])
    res = run_cli(*predict_args(inp, out, tiny_models, "--engine", "fast", "--segment-reads", "4",
                                "--token-budget", "104", "--batches-per-unit", "1"))
    assert res.code == 2 and "Traceback" not in res.err, str(res)
    assert res.err_lines()[-1].startswith("virnucpro: error:") and "bad" in res.err_lines()[-1], str(res)
    assert refuse_after_first_unit, "no unit was checkpointed before the input was refused (nothing overlapped)"
    assert_nothing_written(out)
    assert out.exists() == (outdir_state == "empty"), "an existing output directory must stay; a new one must go"


def test_a_non_empty_outdir_is_untouched_by_a_refused_input(tmp_path, tiny_models, run_cli):
    """Into a directory holding files, the input is read whole before anything is written."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    inp = write_fasta(tmp_path / "in.fa", [("r1", OPEN_SEQ), ("r1", OPEN_SEQ)])
    res = run_cli(*predict_args(inp, out, tiny_models, "--engine", "fast"))
    assert_one_line_error(res, "duplicate")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


def test_corrupt_gzip_is_an_input_error(tmp_path, tiny_models, run_cli):
    inp = tmp_path / "corrupt.fa.gz"
    inp.write_bytes(b"\x1f\x8b\x08\x00" + b"not really deflate data" * 4)
    res = run_cli(*predict_args(inp, tmp_path / "out", tiny_models))
    assert_one_line_error(res, "gzip")


def test_truncated_gzip_is_an_input_error(tmp_path, tiny_models, run_cli):
    inp = tmp_path / "trunc.fa.gz"
    inp.write_bytes(gzip.compress(f">r1\n{OPEN_SEQ * 20}\n".encode())[:40])
    out = tmp_path / "out"
    res = run_cli(*predict_args(inp, out, tiny_models))
    assert_one_line_error(res, str(inp))
    assert_nothing_written(out)


def test_directory_as_input(tmp_path, tiny_models, run_cli):
    d = tmp_path / "adir"
    d.mkdir()
    res = run_cli(*predict_args(d, tmp_path / "out", tiny_models))
    assert_one_line_error(res, "directory", str(d))
    assert_nothing_written(tmp_path / "out")


def test_duplicate_ids_refused_then_renamed(tmp_path, tiny_models, run_cli):
    inp = write_fasta(tmp_path / "dup.fa", [("r1", OPEN_SEQ), ("r2", OPEN_SEQ), ("r1", OPEN_SEQ[::-1])])
    out = tmp_path / "out"
    res = run_cli(*predict_args(inp, out, tiny_models))
    assert_one_line_error(res, "duplicate", "r1", "--duplicate-ids rename")
    assert_nothing_written(out)

    res = run_cli(*predict_args(inp, out, tiny_models, "--duplicate-ids", "rename"))
    assert res.code == 0, str(res)
    frame_ids = [ln.split("\t")[0] for ln in (out / PRED).read_text().splitlines()[1:]]
    for rid in ("r1", "r2", "r1_dup2"):
        assert f"{rid}_chunk_1F1" in frame_ids, f"{rid}_chunk_1F1 missing from {frame_ids[:12]}"
    reads = [ln.split("\t")[0] for ln in (out / SUMMARY).read_text().splitlines() if not ln.startswith("#")]
    assert reads == ["read_id", "r1", "r2", "r1_dup2"], f"read_summary ids {reads}"


# --------------------------------------------------------------------------- models

def test_missing_models_dir(tmp_path, small_fa, run_cli):
    missing = tmp_path / "no-such-models"
    res = run_cli(*predict_args(small_fa, tmp_path / "out", missing))
    assert_one_line_error(res, "model directory not found", str(missing))
    assert_nothing_written(tmp_path / "out")


MODEL_FILES = {  # what to delete from a copy of the tiny set -> what the error must name
    "esm_checkpoint": (["esm2_t2_tiny_synthetic.pt"], ["ESM-2 checkpoint not found", "esm2_"]),
    "contact_regression": (["esm2_t2_tiny_synthetic-contact-regression.pt"],
                           ["esm2_t2_tiny_synthetic-contact-regression.pt"]),
    "dnabert_tokenizer": (["DNABERT-S/tokenizer.json"], ["tokenizer.json"]),
    "dnabert_config": (["DNABERT-S/config.json"], ["DNABERT-S"]),
    "dnabert_weights": (["DNABERT-S/model.safetensors"], ["DNABERT-S weights", "model.safetensors"]),
    "classifier": (["300_model.pth", "300_model.safetensors"], ["classifier not found", "300_model.pth"]),
}


@pytest.mark.parametrize("case", sorted(MODEL_FILES))
def test_models_dir_lacking_a_file_names_it(case, tmp_path, tiny_models, small_fa, run_cli):
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    victims, needles = MODEL_FILES[case]
    for v in victims:
        assert (models / v).exists(), f"the tiny set has no {v}: update this test"
        (models / v).unlink()
    out = tmp_path / "out"
    assert_one_line_error(run_cli(*predict_args(small_fa, out, models)), *needles)
    assert_nothing_written(out)
    assert_one_line_error(run_cli("models", "check", "--models", models), *needles)


def test_models_check_lists_the_models(tiny_models, run_cli):
    res = run_cli("models", "check", "--models", tiny_models, "-c", "500")
    assert res.code == 0, str(res)
    for what in ("esm2_t2_tiny_synthetic.pt", "DNABERT-S", "500_model.pth", "fingerprints"):
        assert what in res.out, f"`models check` output lacks {what}:\n{res.out}"


def test_models_dir_from_environment_variable(tmp_path, tiny_models, small_fa, run_cli, monkeypatch):
    monkeypatch.setenv("VIRNUCPRO_MODELS", str(tiny_models))
    res = run_cli("predict", small_fa, "-o", tmp_path / "out", "--device", "cpu", "--no-progress")
    assert res.code == 0, f"$VIRNUCPRO_MODELS was not used:\n{res}"
    assert (tmp_path / "out" / PRED).is_file()


def test_classifier_chunk_length_mismatch_refused_then_allowed_with_warning(tmp_path, tiny_models, small_fa,
                                                                            run_cli, caplog):
    out = tmp_path / "out"
    args = predict_args(small_fa, out, tiny_models, "-c", "300", "--classifier", tiny_models / "500_model.pth")
    assert_one_line_error(run_cli(*args), "500", "300", "--allow-classifier-mismatch")
    assert_nothing_written(out)

    with caplog.at_level(logging.WARNING, logger="virnucpro"):
        res = run_cli(*args, "--allow-classifier-mismatch")
    assert res.code == 0, str(res)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "500" in r.getMessage()
              and "300" in r.getMessage()]
    warned += [ln for ln in res.err.splitlines() if "500" in ln and "300" in ln]
    assert warned, f"running with a mismatched classifier must warn:\n{res}"
    assert (out / PRED).is_file()
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["classifier"]["chunk_length_mismatch"] is True, manifest["classifier"]
    assert manifest["classifier"]["chunk_length"] == 500


class _Payload:
    """Unpickling this runs ``os.system('touch MARKER')``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("layout", ["torch_zip_object", "state_dict_with_payload", "plain_pickle"])
def test_malicious_classifier_is_refused_without_running_it(layout, tmp_path, tiny_models, small_fa, run_cli):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "300_model.pth"
    if layout == "torch_zip_object":
        torch.save(_Payload(marker), evil)
    elif layout == "state_dict_with_payload":
        torch.save({"hidden_layer.weight": torch.zeros(4, 4), "extra": _Payload(marker)}, evil)
    else:
        evil.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    out = tmp_path / "out"
    res = run_cli(*predict_args(small_fa, out, tiny_models, "--classifier", evil))
    assert not marker.exists(), "the payload in the .pth file was EXECUTED"
    assert_one_line_error(res, str(evil))
    assert_nothing_written(out)


# --------------------------------------------------------------------------- usage errors

@pytest.mark.parametrize("argv,needle", [
    (["-c", "400"], "400"),
    (["--engine", "turbo"], "turbo"),
    (["--bogus-option"], "--bogus-option"),
    (["--workers", "abc"], "abc"),      # also read by the early look at the options (fork server)
    (["--gpus"], "--gpus"),
])
def test_usage_errors_exit_2_without_traceback(argv, needle, tmp_path, tiny_models, small_fa, run_cli):
    out = tmp_path / "out"
    res = run_cli(*predict_args(small_fa, out, tiny_models), *argv)
    assert res.code == 2, str(res)
    assert "Traceback" not in res.err, str(res)
    assert res.err.count("usage:") == 1 and res.err.count("error:") == 1, f"one usage and one error, got:\n{res.err}"
    last = res.err_lines()[-1]
    assert last.startswith("virnucpro: error:") and needle in last, f"last stderr line {last!r}"
    assert last.count("virnucpro") == 1, f"the prefix is doubled: {last!r}"
    assert_nothing_written(out)


@pytest.mark.parametrize("workers", [[], ["--engine", "fast", "--workers", "2"]], ids=["in-process", "2-workers"])
def test_an_outdir_that_is_a_file_is_one_error_line(workers, tmp_path, tiny_models, small_fa, run_cli):
    out = tmp_path / "a-file"
    out.write_text("not a directory\n")
    res = run_cli(*predict_args(small_fa, out, tiny_models), *workers)
    assert res.code == 2, str(res)
    assert res.err_lines()[-1] == f"virnucpro: error: -o/--outdir {out}: exists and is not a directory", str(res)
    assert out.read_text() == "not a directory\n"


def test_missing_outdir_option_is_a_usage_error(small_fa, run_cli):
    res = run_cli("predict", small_fa)
    assert res.code == 2 and res.err_lines()[-1].startswith("virnucpro: error:") and "-o" in res.err, str(res)


@pytest.mark.parametrize("with_input", [True, False])
def test_exactly_one_of_input_and_sample(with_input, tmp_path, tiny_models, small_fa, run_cli):
    out = tmp_path / "out"
    argv = ["predict", *([small_fa, "--sample"] if with_input else []), "-o", out, "--models", tiny_models]
    assert_one_line_error(run_cli(*argv), "--sample")
    assert_nothing_written(out)


# --------------------------------------------------------------------------- internal errors

def test_internal_error_is_exit_1_one_line_and_traceback_in_log(tmp_path, tiny_models, small_fa, run_cli,
                                                                monkeypatch):
    import virnucpro.pipeline as pipeline

    def boom(*a, **k):
        raise RuntimeError("simulated bug in chunk_and_translate")

    monkeypatch.setattr(pipeline, "chunk_and_translate", boom)   # the reference engine's step
    out = tmp_path / "out"
    res = run_cli(*predict_args(small_fa, out, tiny_models, "--engine", "reference"))
    assert res.code == 1, str(res)
    assert "Traceback" not in res.err, str(res)
    errors = [ln for ln in res.err_lines() if not ln.startswith("virnucpro: WARNING:")]
    assert len(errors) == 1 and errors[0].startswith("virnucpro: internal error:"), str(res)
    assert "simulated bug" in errors[0], str(res)
    log_text = (out / "virnucpro.log").read_text()
    assert "Traceback" in log_text and "simulated bug" in log_text, "the traceback belongs in virnucpro.log"
    assert not {PRED, CONS, SUMMARY} & {p.name for p in out.iterdir()}, "prediction files after a crash"


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_a_full_disk_is_the_machines_error_not_a_bug(tmp_path, tiny_models, small_fa, run_cli, monkeypatch, engine):
    """No space left while writing (here: the embeddings, ~13 KB per frame) is one clear line that
    names the cause and says what to do, exit 3, no "internal error ... please report it"; no
    --resume where no work unit was checkpointed (issue 16 item 9)."""
    import errno
    import virnucpro.io.outputs as outputs

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "embeddings"))

    monkeypatch.setattr(outputs, "save_embedding_part", full)
    out = tmp_path / "out"
    res = run_cli(*predict_args(small_fa, out, tiny_models), "--engine", engine, "--save-embeddings")
    assert res.code == 3, str(res)
    errors = [ln for ln in res.err_lines() if not ln.startswith("virnucpro: WARNING:")]
    assert len(errors) == 1, str(res)
    assert errors[0].startswith("virnucpro: error: no space left on the device: ") and "free disk space" in errors[0]
    assert "--resume" not in errors[0], errors[0]
    assert "internal error" not in res.err and "Traceback" not in res.err, str(res)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_the_traceback_log_on_a_full_disk_does_not_hide_the_one_line(monkeypatch):
    """When the log file's own disk is full, writing the traceback there fails too: that failure must
    not escape (the user would get two tracebacks instead of the one-line message)."""
    import logging
    from virnucpro import cli
    handler = logging.FileHandler("/dev/full")
    logger = logging.getLogger("virnucpro")
    logger.addHandler(handler)
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            cli._log_traceback_to_files()   # must return quietly
    finally:
        logger.removeHandler(handler)
        try:
            handler.close()
        except OSError:
            pass


# --------------------------------------------------------------------------- the real command

def test_installed_command_help_and_version(run_module):
    res = run_module("--version")
    assert res.code == 0 and "virnucpro" in res.out + res.err, str(res)
    exe = shutil.which("virnucpro")
    if exe is None:
        pytest.skip("console script `virnucpro` not on PATH (package not installed)")
    import subprocess
    proc = subprocess.run([exe, "predict", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--chunk-length" in proc.stdout, proc.stderr


def test_subprocess_bad_input_is_one_clean_line(tmp_path, tiny_models, run_module):
    out = tmp_path / "out"
    res = run_module(*predict_args(tmp_path / "missing.fa", out, tiny_models))
    assert_one_line_error(res, "not found")
    assert_nothing_written(out)


def test_subprocess_predict_on_the_sample(tmp_path, tiny_models, run_module):
    out = tmp_path / "demo"
    res = run_module("predict", "--sample", "-o", out, "--models", tiny_models, "--device", "cpu",
                     "--chunk-length", "300", "--classifier", tiny_models / "500_model.pth",
                     "--allow-classifier-mismatch")
    assert res.code == 0, str(res)
    assert "virnucpro summary" in res.out and "SYNTHETIC" in res.out, f"no summary on stdout:\n{res}"
    assert "SYNTHETIC" in res.err, f"the synthetic-model warning must reach the terminal:\n{res}"
    assert any("500" in ln and "300" in ln for ln in res.err.splitlines()), \
        f"the classifier mismatch warning must reach the terminal:\n{res}"
    for name in (PRED, CONS, SUMMARY, "run.json", "virnucpro.log"):
        assert (out / name).is_file(), f"{name} missing after `predict --sample`"


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_truncated_esm_checkpoint_is_a_model_error(tmp_path, tiny_models, small_fa, run_cli, engine):
    """A half-copied checkpoint is the user's to fix (exit 2, names the file), not an internal error.
    With the fast engine the models load in a background thread while the input is read: its error
    must still reach the user as the one line."""
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    ckpt = next(p for p in models.glob("esm2_*.pt") if "contact" not in p.name)
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    res = run_cli(*predict_args(small_fa, tmp_path / "out", models, "--engine", engine))
    assert res.code == 2 and "Traceback" not in res.err, f"expected exit 2 without a traceback:\n{res}"
    errors = [ln for ln in res.err_lines() if not ln.startswith("virnucpro: WARNING")]   # the synthetic-models warning
    assert len(errors) == 1 and errors[0].startswith("virnucpro: error:"), f"expected one error line:\n{res}"
    assert str(ckpt) in errors[0] and "ESM-2 checkpoint" in errors[0], errors[0]


# --------------------------------------------------------------------------- output options, help, rough edges

OUTPUT_OPTION = {  # every command that writes: its -o, one convention (file or prefix: --output; directory: --outdir)
    ("predict",): "--outdir", ("classify",): "--outdir", ("models", "synth"): "--outdir",
    ("models", "download"): "--outdir", ("bench",): "--outdir", ("tune",): "--outdir", ("baseline", "make"): "--outdir",
    ("baseline", "import"): "--outdir",
    ("chunk",): "--output", ("translate",): "--output", ("reads", "synth"): "--output",
}
OLD_SPELLINGS = {  # still parsed, no longer shown: argv, dest, expected value
    "translate --prefix": (["translate", "in.fa", "--prefix", "p"], "output", "p"),
    "models synth --out": (["models", "synth", "--out", "d"], "outdir", Path("d")),
    "models download --to": (["models", "download", "--to", "d"], "outdir", Path("d")),
    "bench --out": (["bench", "--out", "d"], "outdir", "d"),
    "baseline make --out-root": (["baseline", "make", "n", "--models", "m", "--reads", "5", "--out-root", "d"],
                                 "outdir", Path("d")),
}


def _subparser(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> argparse.ArgumentParser:
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def test_one_output_option_convention(run_cli):
    import re
    parser = build_parser()
    paths = _subcommand_paths(parser)
    assert set(OUTPUT_OPTION) <= set(paths), set(OUTPUT_OPTION) - set(paths)
    for path in paths:
        outs = [a for a in _subparser(parser, path)._actions if "-o" in a.option_strings]
        if path in OUTPUT_OPTION:
            assert outs and OUTPUT_OPTION[path] in outs[0].option_strings, \
                f"`{' '.join(path)}`: -o should be {OUTPUT_OPTION[path]}, is {outs[0].option_strings if outs else None}"
        else:
            assert not outs, f"`{' '.join(path)}` has -o: add it to OUTPUT_OPTION (and the README's convention)"
        text = run_cli(*path, "--help").out
        old = re.findall(r"(?<![\w-])--(?:out|prefix|to|out-root)(?![\w-])", text)
        assert not old, f"`virnucpro {' '.join(path)} --help` shows an old output spelling: {old}"
    for what, (argv, dest, want) in OLD_SPELLINGS.items():
        assert getattr(parser.parse_args(argv), dest) == want, f"{what} no longer parses"


@pytest.mark.parametrize("command", ["chunk", "translate"])
def test_every_option_of_chunk_and_translate_has_help(command):
    parser = _subparser(build_parser(), (command,))
    bare = [a.dest for a in parser._actions if not a.help]
    assert not bare, f"`virnucpro {command} --help`: no help text for {bare}"


def test_bench_help_shows_each_default_once(run_cli):
    import re
    text = " ".join(run_cli("bench", "--help").out.split())
    assert "(default: None)" not in text, text
    assert not re.search(r"\(default[^)]*\)\s*\(default", text), "a default shown twice"
    assert "--yes" in text and "5.7 GB" in text


def test_chunk_writes_gzip_when_the_name_ends_in_gz(tmp_path, small_fa, run_cli):
    plain, packed = tmp_path / "x.fa", tmp_path / "x.fa.gz"
    assert run_cli("chunk", small_fa, "-o", plain).code == 0
    assert run_cli("chunk", small_fa, "-o", packed).code == 0
    assert packed.read_bytes()[:2] == b"\x1f\x8b", "x.fa.gz is not gzip"
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()
    first = packed.read_bytes()
    assert run_cli("chunk", small_fa, "-o", packed).code == 0
    assert packed.read_bytes() == first, "the same input must give the same .gz bytes (no time stamp)"


@pytest.mark.parametrize("command, out", [("chunk", "missing_dir/x.fa"), ("translate", "missing_dir/pre"),
                                          ("translate", "missing_dir/")])
def test_output_into_a_missing_directory_is_one_line_exit_2(command, out, tmp_path, small_fa, run_cli):
    res = run_cli(command, small_fa, "-o", tmp_path / out if not out.endswith("/") else f"{tmp_path / out}/")
    assert_one_line_error(res, str(tmp_path / "missing_dir"), "does not exist")
    assert not (tmp_path / "missing_dir").exists()


def test_chunk_onto_a_directory_is_one_line_exit_2(tmp_path, small_fa, run_cli):
    assert_one_line_error(run_cli("chunk", small_fa, "-o", tmp_path), "is a directory")


@pytest.mark.parametrize("spelling", ["slash", "existing"])
def test_translate_into_a_directory_writes_inside_it(spelling, tmp_path, small_fa, run_cli):
    d = tmp_path / "frames"
    d.mkdir()
    res = run_cli("translate", small_fa, "-o", f"{d}/" if spelling == "slash" else d)
    assert res.code == 0, str(res)
    assert sorted(p.name for p in d.iterdir()) == ["small_nucleotide.fa", "small_protein.faa"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "small.fa"], "written beside the directory"


@pytest.mark.parametrize("extra", [[], ["--engine", "fast"], ["--engine", "reference"]])
def test_gpus_without_a_gpu_is_an_error(extra, tmp_path, tiny_models, small_fa, run_cli, monkeypatch):
    """As --device cuda is on a machine without a GPU (it was only a warning, or ignored)."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    out = tmp_path / "out"
    res = run_cli("predict", small_fa, "-o", out, "--models", tiny_models, "--no-progress", "--gpus", "2", *extra)
    assert_one_line_error(res, "--gpus 2", "no CUDA GPU")
    assert_nothing_written(out)


def test_synthetic_model_files_get_the_usual_mode(tiny_models):
    from virnucpro.core.files import FILE_MODE
    odd = {str(p.relative_to(tiny_models)): oct(p.stat().st_mode & 0o777) for p in tiny_models.rglob("*")
           if p.is_file() and p.stat().st_mode & 0o777 != FILE_MODE}
    assert not odd, f"model files not {oct(FILE_MODE)} (as other outputs): {odd}"


def test_bench_writes_no_full_model_set_without_a_yes(tmp_path, run_cli):
    models, out = tmp_path / "models", tmp_path / "bench"
    res = run_cli("bench", "--models", models, "-o", out, "--device", "cpu")
    assert_one_line_error(res, "--yes", "5.7 GB", "--preset tiny")
    assert not models.exists() and not out.exists()


def test_bench_names_the_reads_that_ran_and_prints_figures_not_dicts(tmp_path, tiny_models, run_cli, monkeypatch):
    """A workload smaller than --reference-reads (default 2,000) runs side by side whole: bench says
    how many reads that was; agreement and GPU utilisation are printed as figures."""
    import virnucpro.perf.compare as compare
    import virnucpro.pipeline as pipeline
    from types import SimpleNamespace
    inp = write_fasta(tmp_path / "w.fa", [(f"r{i}", OPEN_SEQ) for i in range(30)])

    def fake_predict(opts):
        n = opts.input.read_text().count(">")
        return {"wall_s": 2.0, "embed_wall_s": 1.0, "reads": n, "frames": 6 * n, "esm_tokens_per_s": 10.0,
                "packing_efficiency": 0.9, "gpu_util_mean": None, "mfu_esm": None, "peak_gpu_mem_gib": None,
                "io_wait_s": 0.0, "stages": {"load_models": 0.5}, "precision": "fp32", "engine": opts.engine}

    scores = SimpleNamespace(mean_abs=2.5e-4, max_abs=1e-3)
    modes = {"frame": SimpleNamespace(agreement=0.995, n_mismatch=3, n_both=600, scores=scores)}
    monkeypatch.setattr(pipeline, "predict", fake_predict)
    monkeypatch.setattr(compare, "compare_dirs", lambda a, b: SimpleNamespace(modes=modes))
    res = run_cli("bench", "--workload", inp, "--models", tiny_models, "-o", tmp_path / "b", "--device", "cpu")
    assert res.code == 0, str(res)
    assert "side by side on 30 reads" in res.out, res.out
    assert "GPU util n/a" in res.out and "None" not in res.out, res.out
    assert "frame label agreement with the reference engine: 99.50% (3 of 600 differ)" in res.out, res.out
    assert "{" not in res.out, f"a raw dict printed:\n{res.out}"
    assert json.loads((tmp_path / "b" / "bench.json").read_text())["side_by_side"]["reads"] == 30


def test_bench_writes_a_full_set_after_a_yes_on_a_terminal(tmp_path, monkeypatch):
    from virnucpro.models import synth
    from virnucpro.perf import bench
    written = []
    monkeypatch.setattr(synth, "synth", lambda out, preset, seed, device: written.append((out, preset)))
    monkeypatch.setattr(bench, "_ask", lambda question: "5.7 GB" in question)
    bench.ensure_models(tmp_path / "m", "full", 0, "cpu")
    assert written == [(tmp_path / "m", "full")]
    monkeypatch.setattr(bench, "_ask", lambda question: False)
    bench.ensure_models(tmp_path / "t", "tiny", 0, "cpu")   # a tiny set needs no yes
    bench.ensure_models(tmp_path / "y", "full", 0, "cpu", yes=True)
    assert [p for _, p in written] == ["full", "tiny", "full"]
