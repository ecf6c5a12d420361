"""Many samples in one ``virnucpro predict`` (issue 18, item 4): several inputs or ``--samples SHEET``
into OUTROOT/<sample>/, the models loaded once, samples_summary.tsv, a failed sample named while the
others finish (exit 4), --resume skipping finished samples, and every problem of the sheet or of the
ids found before any work (exit 2, nothing made)."""

from __future__ import annotations

import csv
import shutil

import pytest

from virnucpro.core.telemetry import read_telemetry
from virnucpro.errors import InputError
from virnucpro.io.samplesheet import derive_id, read_sheet, samples_from_paths

FILES = ("prediction_results.txt", "prediction_results_highestscore.csv", "read_summary.tsv", "viral_reads.fa")
CPU = ["--device", "cpu", "--no-progress"]


def summary_rows(outroot):
    with open(outroot / "samples_summary.tsv", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.fixture(scope="module")
def reads(tmp_path_factory, synthetic_reads):
    """Two small samples (different reads) under names a sequencer might give."""
    d = tmp_path_factory.mktemp("samples")
    a, b = d / "gut_01.fasta", d / "gut_02.fa"
    shutil.copy(synthetic_reads(40, 11), a)
    shutil.copy(synthetic_reads(30, 12), b)
    return a, b


# -- ids and sheets ------------------------------------------------------------------------------

def test_ids_from_file_names():
    assert derive_id("x/gut_01.fastq.gz") == "gut_01"
    assert derive_id("gut.02.fq") == "gut.02"
    assert derive_id("S3.FA.GZ") == "S3"
    assert derive_id("reads.txt") == "reads.txt"


def test_id_clash_names_both_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for p in (tmp_path / "a" / "x.fq.gz", tmp_path / "b" / "x.fasta"):
        p.write_text(">r\nACGT\n")
    with pytest.raises(InputError) as e:
        samples_from_paths([tmp_path / "a" / "x.fq.gz", tmp_path / "b" / "x.fasta"])
    assert "a/x.fq.gz" in str(e.value) and "b/x.fasta" in str(e.value) and "'x'" in str(e.value)


def test_sheet_relative_paths_and_comments(tmp_path, reads):
    (tmp_path / "r").mkdir()
    shutil.copy(reads[0], tmp_path / "r" / "one.fa")
    sheet = tmp_path / "sheet.tsv"
    sheet.write_text(f"# my run\nsample\tpath\n\nS1\tr/one.fa\n# skipped\nS2\t{reads[1]}\n")
    got = read_sheet(sheet)
    assert [(s.id, s.path) for s in got] == [("S1", tmp_path / "r" / "one.fa"), ("S2", reads[1])]


@pytest.mark.parametrize("body, words", [
    ("id\tfile\nS1\t{a}\n", ["line 1", "header"]),
    ("sample\tpath\nS1\t{a}\textra\n", ["line 2", "two tab-separated"]),
    ("sample\tpath\nS1\t{a}\ns1\t{b}\n", ["line 3", "'s1'", "line 2"]),
    ("sample\tpath\n../up\t{a}\n", ["line 2", "'../up'", "output folder"]),
    ("sample\tpath\nS1\tmissing.fa\n", ["line 2", "missing.fa", "file not found"]),
    ("sample\tpath\n", ["no samples"]),
    ("# only a comment\n", ["empty sample sheet"]),
])
def test_bad_sheet_is_one_line_before_any_work(tmp_path, reads, run_cli, tiny_models, body, words):
    sheet = tmp_path / "sheet.tsv"
    sheet.write_text(body.format(a=reads[0], b=reads[1]))
    out = tmp_path / "out"
    r = run_cli("predict", "--samples", sheet, "-o", out, "--models", tiny_models, *CPU)
    assert r.code == 2, r
    line = r.err_lines()[-1]
    assert line.startswith("virnucpro: error: --samples") and all(w in line for w in words), line
    assert not out.exists()


def test_stdin_among_several_inputs_refused(tmp_path, reads, run_cli, tiny_models):
    r = run_cli("predict", reads[0], "-", "-o", tmp_path / "out", "--models", tiny_models, *CPU)
    assert r.code == 2 and "standard input" in r.err_lines()[-1], r
    assert not (tmp_path / "out").exists()


# -- runs ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_samples(tmp_path_factory, reads, tiny_models):
    """One command with both samples, and each sample run on its own."""
    from tests.conftest import invoke_cli
    d = tmp_path_factory.mktemp("two")
    multi = invoke_cli("predict", *reads, "-o", d / "out", "--models", tiny_models, *CPU)
    singles = [invoke_cli("predict", r, "-o", d / f"single{k}", "--models", tiny_models, *CPU)
               for k, r in enumerate(reads)]
    return d, multi, singles


def test_two_samples_same_outputs_as_two_runs(two_samples):
    d, multi, singles = two_samples
    assert multi.code == 0 and all(s.code == 0 for s in singles), multi
    for k, sid in enumerate(("gut_01", "gut_02")):
        for name in FILES:
            assert (d / "out" / sid / name).read_bytes() == (d / f"single{k}" / name).read_bytes(), (sid, name)
        assert (d / "out" / sid / "run.json").is_file()   # each sample's output set committed


def test_models_loaded_once(two_samples):
    """The second sample's engine is the first's: its load_models stage took no loading at all."""
    d, _, _ = two_samples
    loads = [next(e for e in read_telemetry(d / "out" / sid / "virnucpro.log")
                  if e["event"] == "stage" and e["stage"] == "load_models")["load_total_s"]
             for sid in ("gut_01", "gut_02")]
    assert loads[0] > 0 and loads[1] == 0.0, loads


def test_summary_lists_every_sample(two_samples, reads):
    d, multi, _ = two_samples
    rows = summary_rows(d / "out")
    assert [r["sample"] for r in rows] == ["gut_01", "gut_02"] and {r["status"] for r in rows} == {"ok"}
    for r, path in zip(rows, reads):
        per_read = (d / "out" / r["sample"] / "read_summary.tsv").read_text().splitlines()
        body = [line for line in per_read if not line.startswith("#")][1:]
        assert int(r["reads"]) == len(body) == sum(1 for line in path.read_text().splitlines() if line.startswith(">"))
        assert int(r["viral_reads"]) == sum(1 for line in body if line.endswith("\tvirus"))
        frames = (d / "out" / r["sample"] / "prediction_results.txt").read_text().splitlines()
        assert int(r["kept_frames"]) == len(frames) - 1 and int(r["chunks"]) > 0
        assert r["input"] == str(path) and float(r["seconds"]) > 0
    assert "gut_01" in multi.out and "2 of 2 samples ok" in multi.out


def test_rerun_without_force_refused_before_any_work(two_samples, reads, tiny_models, run_cli):
    d, _, _ = two_samples
    before = (d / "out" / "samples_summary.tsv").read_bytes()
    r = run_cli("predict", *reads, "-o", d / "out", "--models", tiny_models, *CPU)
    assert r.code == 2 and "gut_01" in r.err_lines()[-1] and "--force" in r.err_lines()[-1], r
    assert (d / "out" / "samples_summary.tsv").read_bytes() == before


def test_failed_middle_sample_named_others_finish(tmp_path, reads, tiny_models, run_cli):
    bad = tmp_path / "broken.fq"
    bad.write_text("this is not a reads file\n")
    out = tmp_path / "out"
    r = run_cli("predict", reads[0], bad, reads[1], "-o", out, "--models", tiny_models, "--device", "cpu", "--progress")
    assert r.code == 4, r
    assert "samples" in r.out and "3/3" in r.out, r   # one display across the samples (where a run's bar goes)
    assert any(line.startswith("virnucpro: sample broken failed: not a FASTA or FASTQ file") for line in r.err_lines()), r
    rows = summary_rows(out)
    assert [(x["sample"], x["status"]) for x in rows] == [("gut_01", "ok"), ("broken", "failed"), ("gut_02", "ok")]
    assert "not a FASTA or FASTQ" in rows[1]["message"] and rows[1]["reads"] == ""
    for sid in ("gut_01", "gut_02"):
        assert all((out / sid / name).is_file() for name in (*FILES, "run.json"))
    assert not (out / "broken").exists()   # a refused input leaves no folder, as a one-sample run


def test_resume_skips_finished_samples(tmp_path, reads, tiny_models, run_cli, synthetic_reads):
    out = tmp_path / "out"
    r1 = run_cli("predict", *reads, "-o", out, "--models", tiny_models, *CPU)
    assert r1.code == 0, r1
    third = tmp_path / "gut_03.fa"
    shutil.copy(synthetic_reads(20, 13), third)
    kept = {sid: (out / sid / "run.json").read_bytes() for sid in ("gut_01", "gut_02")}
    (out / "gut_02" / "prediction_results.txt").unlink()   # (committed, then damaged by hand: not skipped)
    r2 = run_cli("predict", *reads, third, "-o", out, "--models", tiny_models, *CPU, "--resume")
    assert r2.code == 0, r2
    rows = {x["sample"]: x for x in summary_rows(out)}
    assert "skipped (--resume)" in rows["gut_01"]["message"] and rows["gut_01"]["reads"] == "40"
    assert (out / "gut_01" / "run.json").read_bytes() == kept["gut_01"]    # not run again
    assert "skipped" not in rows["gut_02"]["message"] and rows["gut_02"]["status"] == "ok"   # its set was not whole
    assert (out / "gut_02" / "prediction_results.txt").is_file() and (out / "gut_02" / "run.json").read_bytes() != kept["gut_02"]
    assert rows["gut_03"]["status"] == "ok" and (out / "gut_03" / "read_summary.tsv").is_file()
    assert "--resume: " not in r2.err   # the new sample is a fresh run, not a warned-about resume


def test_resume_reruns_a_sample_whose_input_changed(tmp_path, reads, tiny_models, run_cli, synthetic_reads):
    a = tmp_path / "a.fa"
    shutil.copy(reads[0], a)
    out = tmp_path / "out"
    sheet = tmp_path / "sheet.tsv"   # (through a sample sheet, a relative path among them)
    sheet.write_text(f"sample\tpath\na\ta.fa\ngut_02\t{reads[1]}\n")
    assert run_cli("predict", "--samples", sheet, "-o", out, "--models", tiny_models, *CPU).code == 0
    assert (out / "a" / "read_summary.tsv").is_file() and (out / "gut_02" / "read_summary.tsv").is_file()
    shutil.copy(synthetic_reads(20, 14), a)   # another sample's reads under the same name
    r = run_cli("predict", "--samples", sheet, "-o", out, "--models", tiny_models, *CPU, "--resume")
    rows = {x["sample"]: x for x in summary_rows(out)}
    assert "skipped" not in rows["a"]["message"] and "skipped" in rows["gut_02"]["message"], r


@pytest.mark.parametrize("stop, code", [(KeyboardInterrupt("stopped by SIGINT"), 130),
                                        (OSError(28, "No space left on device", "x"), 3)])
def test_stop_lists_the_samples_not_run(tmp_path, reads, tiny_models, run_cli, monkeypatch, stop, code):
    """Ctrl-C or a full disk in the second of three samples ends the command; the summary says which
    sample finished, which was stopped and which never ran."""
    import virnucpro.samples as samples_mod
    calls = []

    def fake_predict(opts, shared):
        calls.append(opts.outdir.name)
        if len(calls) == 2:
            raise stop
        return {"reads": 7, "chunks": 8, "frames": 9, "viral_reads": 1, "wall_s": 0.1}

    monkeypatch.setattr(samples_mod, "predict", fake_predict)
    third = tmp_path / "c.fa"
    shutil.copy(reads[0], third)
    out = tmp_path / "out"
    r = run_cli("predict", *reads, third, "-o", out, "--models", tiny_models, *CPU)
    assert r.code == code, r
    rows = summary_rows(out)
    assert [(x["sample"], x["status"]) for x in rows] == [("gut_01", "ok"), ("gut_02", "not_run"), ("c", "not_run")]
    assert rows[0]["reads"] == "7" and "stopped" in rows[1]["message"] and "before this sample" in rows[2]["message"]


def test_shared_models_keep_one_engine():
    """The same key gives the held engine without loading; another key drops it first (never two
    engines on the GPU at once)."""
    from virnucpro.run.executor import SharedModels
    shared, made = SharedModels(), []

    def load(name):
        def go():
            assert shared.value is None, "the held engine must be dropped before another one loads"
            made.append(name)
            return name, 1.5
        return go

    assert shared.get(("a",), load("A")) == ("A", 1.5)
    assert shared.get(("a",), load("A2")) == ("A", 0.0)
    assert shared.get(("b",), load("B")) == ("B", 1.5)
    assert made == ["A", "B"] and shared.loads == 2
    assert shared.once(("k",), lambda: [1]) is shared.once(("k",), lambda: [2])


def test_empty_command_line_names_the_three_ways(tmp_path, run_cli):
    r = run_cli("predict", "-o", tmp_path / "out")
    assert r.code == 2 and "--samples SHEET" in r.err_lines()[-1], r
    r = run_cli("predict", "--sample", "--samples", tmp_path / "s.tsv", "-o", tmp_path / "out")
    assert r.code == 2 and "exactly one" in r.err_lines()[-1], r
