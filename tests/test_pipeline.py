"""End to end: `virnucpro predict` / `chunk` / `translate` on an edge-case FASTA with tiny synthetic
models (reference engine, CPU), checked against an independent re-derivation of the original's rules.

The expected chunks come from a literal transcription of the spec's arithmetic (below, not from
virnucpro.prep.chunking); the expected kept frames from ``six_frame_kept_naive`` (the per-codon reading of
the spec); consensus and per-read summary are recomputed here from the frame file's scores.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from virnucpro.io import outputs
from virnucpro.io.paths import Paths
from virnucpro.prep.translate import six_frame_kept_naive

from spec_oracle import spec_chunks  # the original's chunking, transcribed literally

PRED, CONS, SUMMARY = "prediction_results.txt", "prediction_results_highestscore.csv", "read_summary.tsv"
EDGE_LENGTHS = (1, 2, 3, 299, 300, 301, 499, 500, 501, 599, 600, 601, 800, 999, 1000, 1001, 1200, 1300)
IUPAC = "RYKMSWBDHVU"


# --------------------------------------------------------------------------- the spec, transcribed
# (chunking: tests/spec_oracle.py, shared with test_chunking.py)

def rc_spec(seq: str) -> str:
    """Spec §3: A<->T, C<->G, other symbols unchanged, then reversed."""
    return "".join({"A": "T", "T": "A", "C": "G", "G": "C"}.get(b, b) for b in reversed(seq))


@dataclass
class Expected:
    chunk_ids: list[str]                     # every chunk, input order
    chunk_seqs: dict[str, str]               # chunk id -> chunk (case kept)
    frames: list[tuple[str, str, str]]       # (frame id, nucleotide, protein), output order
    read_of_frame: dict[str, str]            # frame id -> read id
    n_chunks: dict[str, int]                 # read id -> chunk count


def derive(records: list[tuple[str, str]], chunker) -> Expected:
    """chunker(read_id, seq) -> chunks; the expected outputs of those chunks under the spec."""
    ex = Expected([], {}, [], {}, {})
    for rid, seq in records:
        chunks = chunker(rid, seq)
        ex.n_chunks[rid] = len(chunks)
        for k, chunk in enumerate(chunks):
            cid = f"{rid}_chunk_{k + 1}"
            ex.chunk_ids.append(cid)
            ex.chunk_seqs[cid] = chunk
            for tag, nuc, prot in six_frame_kept_naive(chunk):
                ex.frames.append((cid + tag, nuc, prot))
                ex.read_of_frame[cid + tag] = rid
    return ex


# --------------------------------------------------------------------------- the edge-case input

_FORBIDDEN = {"TAA", "TAG", "TGA", "TTA", "CTA", "TCA"}  # stops and their reverse complements


def open_dna(rng: random.Random, n: int) -> str:
    """DNA with no stop codon in any of the six frames (so frames are kept and get embedded)."""
    s: list[str] = []
    while len(s) < n:
        b = rng.choice("ACGT")
        if len(s) >= 2 and s[-2] + s[-1] + b in _FORBIDDEN:
            continue
        s.append(b)
    return "".join(s)


def decorate(rng: random.Random, seq: str, kind: int) -> str:
    """Lowercase stretches, N runs, IUPAC codes, a stop codon: the mess real files hold."""
    s = list(seq)
    L = len(s)
    if L >= 10:
        if kind % 3 == 0:  # lowercase stretch
            a = rng.randrange(L // 2)
            s[a:a + L // 3] = [c.lower() for c in s[a:a + L // 3]]
        if kind % 4 == 1:  # a run of N
            a = rng.randrange(L - 5)
            s[a:a + 4] = "NNNN"
        if kind % 5 == 2:  # scattered IUPAC codes (some lower case)
            for _ in range(3):
                c = rng.choice(IUPAC)
                s[rng.randrange(L)] = c if rng.random() < 0.5 else c.lower()
        if kind % 6 == 3:  # one stop codon: kills a forward and a reverse frame of its chunk
            a = rng.randrange(L - 3)
            s[a:a + 3] = "TAA"
    return "".join(s)


def edge_records() -> list[tuple[str, str]]:
    rng = random.Random(20260)
    recs: list[tuple[str, str]] = []
    for i, L in enumerate(EDGE_LENGTHS):
        recs.append((f"len{L:04d}_open", decorate(rng, open_dna(rng, L), i)))
        if L >= 299:  # random DNA: mostly no kept frame
            recs.append((f"len{L:04d}_rand", "".join(rng.choice("ACGT") for _ in range(L))))
    recs.insert(5, ("empty_record", ""))
    recs.insert(9, ("all_n", "N" * 350))
    recs.append(("tiny_lower", "atggcc"))
    return recs


def fasta_text(records: list[tuple[str, str]], newline: str) -> str:
    """Multi-line records with varying widths, descriptions after the id, a blank line."""
    out = []
    for i, (rid, seq) in enumerate(records):
        header = f">{rid}" + ("" if i % 3 == 0 else (" some description" if i % 3 == 1 else "\tlen=x"))
        out.append(header)
        width = (60, 70, 80, 10**6)[i % 4]
        out.extend(seq[j:j + width] for j in range(0, len(seq), width))
        if i == 7:
            out.append("")
    return newline.join(out) + newline


@pytest.fixture(scope="module")
def edge(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("edge_input")
    recs = edge_records()
    crlf = fasta_text(recs, "\r\n").encode()
    (d / "edge.fa").write_bytes(crlf)
    (d / "edge.fa.gz").write_bytes(gzip.compress(crlf))
    (d / "edge_lf.fa").write_text(fasta_text(recs, "\n"))
    assert b"\r\n" in (d / "edge.fa").read_bytes()
    return {"dir": d, "records": recs, "fa": d / "edge.fa", "gz": d / "edge.fa.gz", "lf": d / "edge_lf.fa"}


@pytest.fixture(scope="module")
def runs(edge, tiny_models, run_cli, tmp_path_factory) -> dict:
    """Every predict run the checks below need, made once: name -> output directory."""
    base = tmp_path_factory.mktemp("edge_runs")
    plan = {
        "c300": [edge["fa"], "-c", "300"],
        "c500": [edge["fa"], "-c", "500"],
        "c300_gz": [edge["gz"], "-c", "300"],
        "c300_again": [edge["fa"], "-c", "300"],
        "c300_safetensors": [edge["fa"], "-c", "300", "--classifier", tiny_models / "300_model.safetensors"],
        "c500_fixed": [edge["fa"], "-c", "500", "--chunking", "fixed"],
    }
    done = {}
    for name, args in plan.items():
        out = base / name
        res = run_cli("predict", *args, "-o", out, "--models", tiny_models, "--engine", "reference",
                      "--device", "cpu", "--no-progress")
        assert res.code == 0, f"predict {name} failed:\n{res}"
        done[name] = out
        done[name + ":result"] = res
    return done


# --------------------------------------------------------------------------- file parsing

def read_rows(path: Path, header: list[str]) -> list[list[str]]:
    lines = [ln for ln in path.read_text().split("\n") if ln and not ln.startswith("#")]
    assert lines[0].split("\t") == header, f"{path.name}: header {lines[0]!r}, expected {header}"
    rows = [ln.split("\t") for ln in lines[1:]]
    bad = [r for r in rows if len(r) != len(header)]
    assert not bad, f"{path.name}: rows without {len(header)} tab-separated fields: {bad[:3]}"
    return rows


def frame_rows(outdir: Path) -> list[list[str]]:
    return read_rows(outdir / PRED, ["Sequence_ID", "Prediction", "score1", "score2"])


def consensus_rows(outdir: Path) -> list[list[str]]:
    return read_rows(outdir / CONS, ["Modified_ID", "Is_Virus"])


def summary_rows(outdir: Path) -> list[list[str]]:
    return read_rows(outdir / SUMMARY, ["read_id", "length", "n_chunks", "kept_frames", "max_virus_score",
                                        "max_others_score", "label"])


def recomputed_consensus(rows: list[list[str]]) -> dict[str, bool]:
    best: dict[str, list[np.float32]] = {}
    for fid, _, s1, s2 in rows:
        cur = best.setdefault(fid[:-2], [np.float32(-1), np.float32(-1)])
        cur[0] = max(cur[0], np.float32(s1))
        cur[1] = max(cur[1], np.float32(s2))
    return {k: bool(v[1] >= v[0]) for k, v in best.items()}


# --------------------------------------------------------------------------- the checks

@pytest.mark.parametrize("C", [300, 500])
def test_frame_ids_are_exactly_the_spec_kept_frames_in_order(edge, runs, C):
    ex = derive(edge["records"], lambda _, s: spec_chunks(s, C))
    got = [r[0] for r in frame_rows(runs[f"c{C}"])]
    want = [f[0] for f in ex.frames]
    assert len(want) > 50, f"the edge input should keep many frames, the spec gives {len(want)}"
    assert {f[-2:] for f in want} == {"F1", "F2", "F3", "R1", "R2", "R3"}, "every frame tag should occur"
    i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    assert got == want, (f"C={C}: {len(got)} frame rows, the spec gives {len(want)}; first difference at row "
                         f"{i}: seen {got[i:i + 3]}, expected {want[i:i + 3]}")


@pytest.mark.parametrize("C", [300, 500])
def test_scores_labels_and_float32_formatting(runs, C):
    for fid, label, s1, s2 in frame_rows(runs[f"c{C}"]):
        for s in (s1, s2):
            assert str(np.float32(s)) == s, f"{fid}: score {s!r} is not numpy float32 str() ({np.float32(s)!s})"
        a, b = np.float32(s1), np.float32(s2)
        assert 0.0 <= a <= 1.0 and 0.0 <= b <= 1.0 and abs(float(a) + float(b) - 1.0) < 1e-5, \
            f"{fid}: scores {s1}, {s2} are not a softmax pair"
        want = "virus" if b > a else "others"
        assert label == want, f"{fid}: label {label} but score1={s1} score2={s2} (argmax, tie -> others)"


@pytest.mark.parametrize("C", [300, 500])
def test_consensus_one_sorted_row_per_chunk_with_a_kept_frame(runs, C):
    frames = frame_rows(runs[f"c{C}"])
    rows = consensus_rows(runs[f"c{C}"])
    ids = [r[0] for r in rows]
    assert ids == sorted(ids), "consensus rows must be sorted by Modified_ID"
    assert len(ids) == len(set(ids)), "one consensus row per chunk"
    want = recomputed_consensus(frames)
    assert set(ids) == set(want), f"chunks seen {sorted(set(ids) ^ set(want))[:5]} differ from frame file's"
    for cid, flag in rows:
        assert flag in ("True", "False"), f"{cid}: Is_Virus {flag!r}"
        assert flag == str(want[cid]), f"{cid}: Is_Virus {flag}, max score2 >= max score1 gives {want[cid]}"
    assert {"True", "False"} <= {r[1] for r in rows}, "both consensus values should occur on the edge input"


@pytest.mark.parametrize("C", [300, 500])
def test_read_summary_has_one_consistent_row_per_read(edge, runs, C):
    outdir = runs[f"c{C}"]
    ex = derive(edge["records"], lambda _, s: spec_chunks(s, C))
    frames = frame_rows(outdir)
    cons = recomputed_consensus(frames)
    rows = summary_rows(outdir)
    assert [r[0] for r in rows] == [rid for rid, _ in edge["records"]], "one row per input read, input order"
    by_read: dict[str, list[list[str]]] = {}
    for fr in frames:
        by_read.setdefault(ex.read_of_frame[fr[0]], []).append(fr)
    want_fasta = []
    for (rid, seq), (_, length, n_chunks, kept, best, best_others, label) in zip(edge["records"], rows):
        mine = by_read.get(rid, [])
        want_best = str(max(np.float32(f[3]) for f in mine)) if mine else ""
        want_others = str(max(np.float32(f[2]) for f in mine)) if mine else ""
        viral = any(cons[f[0][:-2]] for f in mine)
        want_label = "no_kept_frame" if not mine else ("virus" if viral else "others")
        want = [str(len(seq)), str(ex.n_chunks[rid]), str(len(mine)), want_best, want_others, want_label]
        seen = [length, n_chunks, kept, best, best_others, label]
        assert seen == want, f"{rid}: seen {seen}, expected {want}"
        if want_label == "virus":
            want_fasta.append(f">{rid} max_virus_score={want_best}\n{seq}\n")
    assert want_fasta, "the edge cases should hold a read labelled virus"
    assert (outdir / "viral_reads.fa").read_text() == "".join(want_fasta), "viral_reads.fa: the virus reads, as read"


def test_run_manifest_and_synthetic_labelling(runs):
    out = runs["c300"]
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["chunk_length"] == 300 and manifest["engine"] == "reference", manifest
    assert manifest["synthetic"], "run.json must record that the models were synthetic"
    note = Paths(out).synthetic_note
    assert note.is_file() and "SYNTHETIC" in note.read_text(), "SYNTHETIC_MODELS.txt sidecar missing"
    first = (out / SUMMARY).read_text().split("\n", 1)[0]
    assert first.startswith("#") and "SYNTHETIC" in first, f"read_summary.tsv first line {first!r}"
    log_text = (out / "virnucpro.log").read_text()
    assert any("WARNING" in ln and "SYNTHETIC" in ln for ln in log_text.splitlines()), \
        "virnucpro.log lacks a WARNING line about synthetic models"
    res = runs["c300:result"]
    assert "SYNTHETIC" in res.err, f"the terminal should be warned about synthetic models:\n{res}"
    assert "SYNTHETIC" in res.out, f"the summary should say the models are synthetic:\n{res}"


def test_gzip_input_gives_identical_outputs(runs):
    for name in (PRED, CONS, SUMMARY):
        assert (runs["c300_gz"] / name).read_bytes() == (runs["c300"] / name).read_bytes(), \
            f"{name} differs between plain and .gz input"


def test_windows_line_endings_give_the_same_result_as_unix(edge, tiny_models, run_cli, runs, tmp_path):
    res = run_cli("predict", edge["lf"], "-o", tmp_path / "lf", "--models", tiny_models, "-c", "300",
                  "--device", "cpu", "--no-progress", "--engine", "reference")   # as runs["c300"]
    assert res.code == 0, str(res)
    for name in (PRED, CONS, SUMMARY):
        assert (tmp_path / "lf" / name).read_bytes() == (runs["c300"] / name).read_bytes(), \
            f"{name} differs between CRLF and LF input"


def test_predict_restores_the_thread_switch_interval(edge, tiny_models, run_cli, tmp_path):
    """``predict`` lowers Python's switch interval for its threads (virnucpro.core.background) and gives
    the caller back its own, also when the run fails."""
    import sys
    before = sys.getswitchinterval()
    assert run_cli("predict", edge["fa"], "-o", tmp_path / "ok", "--models", tiny_models, "--device", "cpu",
                   "--no-progress").code == 0
    assert sys.getswitchinterval() == before, "a run left the process with another switch interval"
    bad = tmp_path / "bad.fa"
    bad.write_text("hello world\n")   # neither FASTA nor FASTQ
    assert run_cli("predict", bad, "-o", tmp_path / "bad", "--models", tiny_models, "--device", "cpu").code == 2
    assert sys.getswitchinterval() == before, "a failed run left the process with another switch interval"


def test_two_runs_are_byte_identical(runs):
    for name in (PRED, CONS, SUMMARY):
        assert (runs["c300_again"] / name).read_bytes() == (runs["c300"] / name).read_bytes(), \
            f"{name} differs between two identical runs"


def test_safetensors_classifier_gives_identical_scores(runs):
    manifest = json.loads((runs["c300_safetensors"] / "run.json").read_text())
    assert manifest["models"]["classifier"].endswith("300_model.safetensors"), \
        f"--classifier was not used: {manifest['models']['classifier']}"
    assert (runs["c300_safetensors"] / PRED).read_bytes() == (runs["c300"] / PRED).read_bytes(), \
        "300_model.safetensors and 300_model.pth give different scores"


def test_chunk_command_writes_the_spec_chunks(edge, run_cli, tmp_path):
    for C in (300, 500):
        out = tmp_path / f"chunks{C}.fa"
        res = run_cli("chunk", edge["fa"], "-o", out, "-c", C)
        assert res.code == 0, str(res)
        got = _read_simple_fasta(out)
        ex = derive(edge["records"], lambda _, s: spec_chunks(s, C))
        assert [g[0] for g in got] == ex.chunk_ids, f"C={C}: chunk ids differ from the spec's"
        for cid, seq in got:
            assert seq == ex.chunk_seqs[cid], f"C={C} {cid}: {len(seq)} nt, spec gives {len(ex.chunk_seqs[cid])} nt (case kept)"
    quirk = dict(_read_simple_fasta(tmp_path / "chunks500.fa"))
    assert len(quirk["len0501_open_chunk_2"]) == 251, "C=500, L=501: the original's short last chunk is 251 nt"


def test_translate_command_writes_the_3p_plus_1_slices(edge, run_cli, tmp_path):
    C = 300
    res = run_cli("translate", edge["fa"], "-o", tmp_path / "edge", "-c", C)
    assert res.code == 0, str(res)
    nuc = _read_simple_fasta(tmp_path / "edge_nucleotide.fa")
    prot = _read_simple_fasta(tmp_path / "edge_protein.faa")
    ex = derive(edge["records"], lambda _, s: spec_chunks(s, C))
    assert [n[0] for n in nuc] == [f[0] for f in ex.frames], "nucleotide FASTA ids differ from the spec's kept frames"
    assert [p[0] for p in prot] == [f[0] for f in ex.frames], "protein FASTA ids differ from the spec's kept frames"
    n_full = 0
    for (fid, n), (_, p), (_, want_n, want_p) in zip(nuc, prot, ex.frames):
        assert p == want_p, f"{fid}: protein {p!r}, spec gives {want_p!r}"
        assert n == want_n, f"{fid}: nucleotide slice differs from the spec's"
        # the quirk, independently: 3p+1 bases from the frame offset, clipped at the chunk's end
        chunk = ex.chunk_seqs[fid[:-2]].upper()
        f = int(fid[-1]) - 1
        src = chunk if fid[-2] == "F" else rc_spec(chunk)
        assert n == src[f:f + 3 * len(p) + 1], f"{fid}: not the {3 * len(p) + 1}-nt slice at offset {f}"
        n_full += len(n) == 3 * len(p) + 1
    assert n_full > 0, "no slice shows the unclipped 3p+1 length: the input does not exercise the quirk"


def test_fixed_chunking_gives_full_length_chunks(edge, runs, run_cli, tmp_path):
    C = 500
    out = tmp_path / "fixed.fa"
    res = run_cli("chunk", edge["fa"], "-o", out, "-c", C, "--chunking", "fixed")
    assert res.code == 0, str(res)
    chunks = dict(_read_simple_fasta(out))
    for rid, seq in edge["records"]:
        L = len(seq)
        mine = [chunks[f"{rid}_chunk_{k + 1}"] for k in range(math.ceil(L / C))]
        assert f"{rid}_chunk_{math.ceil(L / C) + 1}" not in chunks, f"{rid}: more than ceil(L/C) chunks"
        if L == 0:
            continue
        if L <= C:
            assert mine == [seq], f"{rid}: a read of {L} <= {C} nt is one whole chunk"
            continue
        assert all(len(c) == C for c in mine), f"{rid} (L={L}): chunk lengths {[len(c) for c in mine]}, expected all {C}"
        assert mine[0] == seq[:C] and mine[-1] == seq[-C:], f"{rid}: fixed chunks must span the read end to end"
        assert all(c in seq for c in mine), f"{rid}: a chunk is not a window of the read"
    ex = derive(edge["records"], lambda rid, s: [chunks[f"{rid}_chunk_{k + 1}"] for k in range(math.ceil(len(s) / C))])
    got = [r[0] for r in frame_rows(runs["c500_fixed"])]
    assert got == [f[0] for f in ex.frames], "predict --chunking fixed: frame ids differ from fixed chunks' kept frames"


@pytest.mark.parametrize("C", [300, 500])
def test_sample_gets_both_labels_with_the_synthetic_classifier(tiny_models, run_cli, tmp_path, C):
    res = run_cli("predict", "--sample", "-o", tmp_path, "--models", tiny_models, "-c", C, "--device", "cpu",
                  "--no-progress")
    assert res.code == 0, str(res)
    labels = [r[1] for r in frame_rows(tmp_path)]
    share = labels.count("virus") / len(labels)
    assert 0.2 <= share <= 0.8, f"C={C}: {share:.0%} of {len(labels)} frames are 'virus': degenerate classifier"
    flags = [r[1] for r in consensus_rows(tmp_path)]
    assert 0 < flags.count("True") < len(flags), f"C={C}: consensus is all {flags[0]}"


def test_tie_is_others_and_consensus_tie_is_virus(tmp_path):
    from types import SimpleNamespace
    scores = np.array([[0.5, 0.5], [0.25, 0.75], [0.8789939, 0.1210061], [1e-8, 1.0 - 1e-8], [0.5, 0.5]],
                      dtype=np.float32)
    ids = ["a_chunk_1F1", "a_chunk_1R2", "b_chunk_1F2", "c_chunk_1F1", "t_chunk_1F1"]
    records = [SimpleNamespace(id=i[:1], seq="A" * 300) for i in ids]
    chunks = [SimpleNamespace(id=i[:-2], read_index=k) for k, i in enumerate(ids)]
    frames = [(i, k, None, None) for k, i in enumerate(ids)]
    outputs.OutputRows().write(tmp_path, records, chunks, frames, scores, synthetic=False)
    rows = frame_rows(tmp_path)
    assert [r[1] for r in rows] == ["others", "virus", "others", "virus", "others"], "label = argmax, a tie -> others"
    assert [r[2:] for r in rows] == [[str(np.float32(a)), str(np.float32(b))] for a, b in scores.tolist()]
    assert rows[2][2] == "0.8789939", "float32 str() formatting, as in the spec's example"
    assert dict(consensus_rows(tmp_path))["t_chunk_1"] == "True", \
        "consensus: max score2 >= max score1, so a tie is viral"


# --------------------------------------------------------------------------- interrupted writes

class _FailingLabels:
    """Stands in for outputs.LABELS: raises after ``n`` rows have been formatted."""

    def __init__(self, n: int, exc: BaseException):
        self.n, self.exc, self.calls = n, exc, 0

    def __getitem__(self, i: int) -> str:
        self.calls += 1
        if self.calls > self.n:
            raise self.exc
        return ("others", "virus")[i]


def _leftovers(outdir: Path) -> list[str]:
    return sorted(p.name for p in outdir.iterdir()) if outdir.exists() else []


@pytest.mark.parametrize("exc,code", [(RuntimeError("simulated crash while writing"), 1),
                                      (KeyboardInterrupt(), 130)])
def test_interrupted_write_leaves_no_partial_prediction_file(edge, tiny_models, run_cli, runs, tmp_path,
                                                             monkeypatch, exc, code):
    monkeypatch.setattr(outputs, "LABELS", _FailingLabels(5, exc))
    fresh = tmp_path / "fresh"
    ref = ["--engine", "reference"]   # rows made in the write stage only (the fast engine makes them ahead)
    res = run_cli("predict", edge["fa"], "-o", fresh, "--models", tiny_models, "--device", "cpu", "--no-progress", *ref)
    assert res.code == code, f"expected exit {code}:\n{res}"
    assert "Traceback" not in res.err, str(res)
    left = _leftovers(fresh)
    assert not {PRED, CONS, SUMMARY} & set(left), f"prediction files written by a failed run: {left}"
    assert not [n for n in left if n.endswith(".tmp")], f"temp files left behind: {left}"

    # a failed --force rerun into a finished run's directory keeps the old, complete results
    old = tmp_path / "old"
    shutil.copytree(runs["c300"], old)
    before = (old / PRED).read_bytes()
    res = run_cli("predict", edge["fa"], "-o", old, "--models", tiny_models, "--device", "cpu", "--no-progress", *ref,
                  "--force")
    assert res.code == code, str(res)
    assert (old / PRED).read_bytes() == before, "a failed run damaged the previous prediction_results.txt"
    assert not [n for n in _leftovers(old) if n.endswith(".tmp")], f"temp files left: {_leftovers(old)}"


def _read_simple_fasta(path: Path) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            out.append((line[1:], ""))
        elif line:
            out[-1] = (out[-1][0], out[-1][1] + line)
    return out


def test_summary_stage_table_marks_overlapped_stages():
    """A stage that ran beside the others (chunk/translate during embedding) gets no share of the total."""
    import io
    from virnucpro.report import print_summary
    s = {"wall_s": 10.0, "engine": "fast", "precision": "fp16", "device": "cuda", "reads": 10, "chunks": 10,
         "frames": 8, "viral_chunks": 3, "chunks_with_frames": 7, "viral_reads": 3, "reads_per_s": 1.0,
         "frames_per_s": 1.0, "outdir": "o", "overlapped_stages": ["chunk_translate"],
         "stages": {"load_models": 2.0, "chunk_translate": 5.0, "embed_esm": 6.0, "write": 2.0}}
    buf = io.StringIO()
    print_summary(s, file=buf)
    text = buf.getvalue()
    assert "chunk_translate (overlapped)" in text, text
    assert "60%" in text, f"embed_esm should be 6 of 10 s of serial stages (60%):\n{text}"
