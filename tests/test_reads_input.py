"""Reads as sequencers write them (issue 18 items 3 and 7, issue 16 item 6): FASTQ and FASTQ.gz told
from FASTA by content, standard input / pipes / FIFOs / process substitutions read in one pass, the
input's identity hashed from the bytes parsed (never a reopen by name), a file changed while it was
read refused, and the letters the original accepted (X) accepted with a count."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from run_helpers import env_with
from virnucpro.errors import InputError
from virnucpro.io import fasta
from virnucpro.io.fasta import RecordStream, read_fasta

OPEN_SEQ = "GCC" * 50   # every frame kept


def reads_text(n: int, fmt: str = "fasta", seq=lambda i: "ACGTGCCA" * (5 + i % 7)) -> str:
    if fmt == "fasta":
        return "".join(f">r{i} some description\n{seq(i)}\n" for i in range(n))
    return "".join(f"@r{i} some description\n{seq(i)}\n+\n{'I' * len(seq(i))}\n" for i in range(n))


def ids_seqs(records) -> list[tuple[str, str]]:
    return [(r.id, r.seq) for r in records]


# ------------------------------------------------------------------ FASTQ

@pytest.mark.parametrize("block_chars", [7, 64, 1 << 24])
def test_fastq_gives_the_records_its_fasta_gives(tmp_path, monkeypatch, block_chars):
    """Same ids (header up to the first whitespace) and sequences as the FASTA of the same reads,
    whatever the block size; qualities ignored; '+' may repeat the header; CRLF, lowercase, gzip
    under any name, blank lines at the end."""
    monkeypatch.setattr(fasta, "_BLOCK_CHARS", block_chars)
    seq = lambda i: ("acgtNRYx" if i % 5 == 0 else "ACGTGCCA") * (1 + i % 4)   # noqa: E731
    want = ids_seqs(read_fasta(_write(tmp_path / "r.fa", reads_text(30, "fasta", seq))))
    text = reads_text(30, "fastq", seq).replace("+\n", "+r0 some description\n", 1).replace("\n", "\r\n")
    for name, data in [("r.fq", text.encode() + b"\r\n\r\n"), ("r.txt", gzip.compress(text.encode()))]:
        got = ids_seqs(read_fasta(_write(tmp_path / name, data)))
        assert got == want, name


def test_fastq_block_parser_gives_what_biopython_gives(tmp_path, monkeypatch):
    from Bio.SeqIO.QualityIO import FastqGeneralIterator
    import numpy as np
    rng = np.random.default_rng(1)
    for k in range(40):
        monkeypatch.setattr(fasta, "_BLOCK_CHARS", int(rng.integers(3, 90)))
        recs = ["@first\nACGT\n+\nIIII\n"]   # (a file of empty sequences only is refused)
        for i in range(int(rng.integers(1, 15))):
            s = "".join(rng.choice(list("ACGTNacgtn"), size=int(rng.integers(0, 30))))
            q = "".join(rng.choice(list("!#5?@+IJ"), size=len(s)))   # qualities may start with '@' or '+'
            recs.append(f"@id{i}{rng.choice(['', ' d', chr(9) + 'x y'])}\n{s}\n+\n{q}\n")
        text = "".join(recs)
        want = [(t.split(None, 1)[0], s) for t, s, _ in FastqGeneralIterator(io.StringIO(text))]
        assert ids_seqs(read_fasta(_write(tmp_path / f"f{k}.fq", text))) == want, text


@pytest.mark.parametrize("block_chars", [5, 1 << 24])
@pytest.mark.parametrize("text, needles", [
    ("@r1\nACGT\n+\nIIII\n@r2\nACGT\nACGT\n+\nIIIIIIII\n", ["line 7", "'r2'", "multi-line"]),
    ("@r1\nACGT\n+\nIIII\n@r2\nACGT\n+\nIII\n", ["line 8", "'r2'", "3 quality values for 4 bases"]),
    ("@r1\nACGT\n+\nIIII\nr2\nACGT\n+\nIIII\n", ["line 5", "'@'"]),
    ("@r1\nACGT\n+\nIIII\n@r2\nACGT\n", ["ends inside record 'r2'"]),
    ("@r1\nACGT\n+r9\nIIII\n", ["line 3", "another header"]),
    ("\n\n@r1\nACGT\n+\nIIII\n@\nACGT\n+\nIIII\n", ["line 7", "empty header"]),
    ("@r1\nACGT\n+\nIIII\n@r2\nMKWVTFIS\n+\nIIIIIIII\n", ["line 6", "'r2'", "not nucleotide codes"]),
])
def test_a_malformed_fastq_is_one_line_with_the_line_number(tmp_path, monkeypatch, block_chars, text, needles):
    monkeypatch.setattr(fasta, "_BLOCK_CHARS", block_chars)
    with pytest.raises(InputError) as exc:
        read_fasta(_write(tmp_path / "bad.fq", text))
    msg = str(exc.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg


# ------------------------------------------------------------------ letters the original accepted

def test_x_is_accepted_counted_and_its_codons_dropped(tmp_path, caplog):
    """The original translates a read holding X (its codons dropped: not in the 64-codon table);
    so do we, with a warning count. Protein stays refused (X or not)."""
    from virnucpro.prep.frames import chunk_and_translate
    from virnucpro.prep.translate import six_frame_kept_naive
    seq = "ATGGCCXAAGCCGGCxGCCTTTXXXGGCCAA" * 3
    s = RecordStream(_write(tmp_path / "x.fa", f">x1\n{seq}\n>plain\n{OPEN_SEQ}\n>x2\nXXXX\n"), background=False)
    assert ids_seqs(s.result()) == [("x1", seq), ("plain", OPEN_SEQ), ("x2", "XXXX")]
    assert s.flags.reads == 2 and s.flags.example == "x1"
    assert any("2 read(s) hold X" in r.getMessage() for r in caplog.records), caplog.text
    _, frames = chunk_and_translate(s.result()[:1], 300, "original")
    assert [(f[0][-2:], f[2], f[3]) for f in frames] == six_frame_kept_naive(seq)
    with pytest.raises(InputError, match="'p1' holds characters that are not nucleotide codes: 'FIL'"):
        read_fasta(_write(tmp_path / "p.fa", ">p1\nMKXWVTFISLLX\n"))


def test_a_read_holding_x_is_predicted_with_a_warning(tmp_path, tiny_models, run_cli):
    """Refused with 'not nucleotide codes' before; now scored like any read, and counted."""
    inp = _write(tmp_path / "x.fa", f">r1\n{OPEN_SEQ}\n>rx\n{OPEN_SEQ[:60]}X{OPEN_SEQ[61:]}\n")
    out = tmp_path / "out"
    res = run_cli("predict", inp, "-o", out, "--models", tiny_models, "--device", "cpu", "--no-progress",
                  "--engine", "fast")
    assert res.code == 0, str(res)
    assert "1 read(s) hold X" in res.err, res.err
    assert json.loads((out / "run.json").read_text())["summary"]["reads_with_x"] == 1
    rows = (out / "prediction_results.txt").read_text()
    assert "rx_chunk_1F1" in rows and "r1_chunk_1F1" in rows


# ------------------------------------------------------------------ one pass: stdin, pipes, FIFOs

def test_standard_input_in_process(tmp_path, monkeypatch):
    data = gzip.compress(reads_text(20, "fastq").encode())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    s = RecordStream("-", background=False)
    assert ids_seqs(s.result()) == ids_seqs(read_fasta(_write(tmp_path / "r.fa", reads_text(20))))
    assert s.identity == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert s.name == "standard input"


def test_a_fifo_is_read_once(tmp_path):
    """A FIFO has one writer: the old reader's second open waited for another one forever."""
    fifo = tmp_path / "reads.fifo"
    os.mkfifo(fifo)
    data = reads_text(50).encode()
    writer = threading.Thread(target=lambda: fifo.write_bytes(data), daemon=True)
    writer.start()
    s = RecordStream(fifo)
    assert len(s.result(timeout=30)) == 50
    assert s.identity == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    writer.join(5)


@pytest.mark.skipif(not os.path.isdir("/dev/fd"), reason="no /dev/fd")
def test_a_process_substitution_is_read_from_its_start(tmp_path):
    """``<(zcat f.gz)`` is a pipe named /dev/fd/N: peeking at its first bytes and reopening lost
    them ('not a FASTA file')."""
    data = reads_text(30).encode()
    r, w = os.pipe()

    def write():
        with os.fdopen(w, "wb") as fh:
            fh.write(data)

    threading.Thread(target=write, daemon=True).start()
    try:
        s = RecordStream(f"/dev/fd/{r}")
        assert len(s.result(timeout=30)) == 30
        assert s.identity["sha256"] == hashlib.sha256(data).hexdigest()
    finally:
        os.close(r)


def test_gzip_fastq_on_stdin_predicts_as_the_fasta_file(tmp_path, tiny_models, run_cli):
    """The real command, its standard input a pipe (subprocess input=): same outputs as the FASTA."""
    seq = lambda i: OPEN_SEQ[: 90 + 7 * i]   # noqa: E731
    fa = _write(tmp_path / "r.fa", reads_text(6, "fasta", seq))
    args = ["--models", str(tiny_models), "--device", "cpu", "--no-progress", "--engine", "fast"]
    assert run_cli("predict", fa, "-o", tmp_path / "file", *args).code == 0
    fq = gzip.compress(reads_text(6, "fastq", seq).encode())
    proc = subprocess.run([sys.executable, "-m", "virnucpro", "predict", "-", "-o", str(tmp_path / "stdin"), *args],
                          input=fq, capture_output=True, timeout=300, env=env_with())
    assert proc.returncode == 0, proc.stderr.decode()
    for name in ("prediction_results.txt", "prediction_results_highestscore.csv", "read_summary.tsv"):
        assert (tmp_path / "stdin" / name).read_bytes() == (tmp_path / "file" / name).read_bytes(), name
    ident = json.loads((tmp_path / "stdin" / "run.json").read_text())["input"]
    assert ident == {"path": "-", "size": len(fq), "sha256": hashlib.sha256(fq).hexdigest()}


def test_resume_of_a_stdin_run_needs_the_same_bytes(tmp_path, tiny_models, run_cli, monkeypatch):
    out = tmp_path / "out"
    args = ["predict", "-", "-o", out, "--models", tiny_models, "--device", "cpu", "--no-progress", "--engine", "fast"]
    data = reads_text(8, "fastq", lambda i: OPEN_SEQ[: 100 + i]).encode()

    def stdin(b: bytes):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b)))

    stdin(data)
    assert run_cli(*args).code == 0
    stdin(data)
    res = run_cli(*args, "--resume")
    assert res.code == 0, str(res)
    stdin(data[: len(data) // 2 - 7] + data[len(data) // 2 + 1:])
    res = run_cli(*args, "--resume")
    last = res.err_lines()[-1]
    assert res.code == 2 and last.startswith("virnucpro: error: --resume refused") and "input" in last, str(res)
    # a run stopped before its input was read to the end recorded no identity: nothing to match
    rd = out / ".virnucpro-run" / "manifest.json"
    rd.write_text(json.dumps({**json.loads(rd.read_text()), "input": None}))
    stdin(data)
    res = run_cli(*args, "--resume")
    assert res.code == 2 and "stopped before its input was read to the end" in res.err, str(res)


def test_the_manifest_gets_the_identity_once_a_streamed_input_is_read(tmp_path, tiny_models, run_cli, monkeypatch,
                                                                     slow_reader):
    """A fresh run embeds while the input is read: its first manifest has no input identity yet
    (the hash covers the bytes parsed); the one written with the last segment has it, before any
    unit of that segment and any output, so a run killed from then on resumes."""
    from virnucpro.run import rundir
    seen = []
    real = rundir.RunDir.write_manifest
    monkeypatch.setattr(rundir.RunDir, "write_manifest", lambda self, m: (seen.append(m.get("input")), real(self, m)))
    data = reads_text(40, "fasta", lambda i: OPEN_SEQ).encode()
    inp = _write(tmp_path / "r.fa", data)
    out = tmp_path / "out"

    def until_manifest():   # the reader holds on until the run has written its first manifest
        deadline = time.time() + 60
        while not seen and time.time() < deadline:
            time.sleep(0.01)

    slow_reader.append(_once_past(2000, until_manifest))
    res = run_cli("predict", inp, "-o", out, "--models", tiny_models, "--device", "cpu",
                  "--no-progress", "--engine", "fast", "--segment-reads", "4")
    assert res.code == 0, str(res)
    ident = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert seen[0] is None and seen[1:] == [ident, ident], seen


# ------------------------------------------------------------------ a file changed while it is read

@pytest.fixture
def slow_reader(monkeypatch):
    """The input read 256 bytes at a time, with a short sleep, calling each ``hooks`` entry with the
    bytes read so far after each read: a test truncates or deletes the file there."""
    from virnucpro.io import source
    monkeypatch.setattr(source, "_READ_BYTES", 256)
    monkeypatch.setattr(fasta, "_BLOCK_CHARS", 300)
    hooks: list = []
    real = source.InputSource.readinto

    def readinto(self, b):
        n = real(self, memoryview(b)[:256])
        for hook in hooks:
            hook(self)
        time.sleep(0.001)
        return n

    monkeypatch.setattr(source.InputSource, "readinto", readinto)
    return hooks


def _once_past(nbytes: int, action):
    done = []

    def hook(src):
        if src.size > nbytes and not done:
            done.append(1)
            action()
    return hook


def test_a_file_truncated_while_read_is_refused(tmp_path, slow_reader):
    p = _write(tmp_path / "r.fa", reads_text(300))
    slow_reader.append(_once_past(3000, lambda: os.truncate(p, 2500)))
    s = RecordStream(p)
    with pytest.raises(InputError, match="changed while it was read") as exc:
        s.result(timeout=60)
    assert "\n" not in str(exc.value) and str(p) in str(exc.value)


def test_a_file_appended_to_while_read_is_refused(tmp_path, slow_reader):
    p = _write(tmp_path / "r.fa", reads_text(100))
    slow_reader.append(_once_past(2000, lambda: p.open("a").write(">late\nACGT\n")))
    with pytest.raises(InputError, match="changed while it was read"):
        RecordStream(p).result(timeout=60)


def test_a_file_deleted_while_read_is_read_to_its_end(tmp_path, slow_reader):
    """The descriptor keeps the bytes: every read, and the identity of the bytes parsed."""
    data = reads_text(200).encode()
    p = _write(tmp_path / "r.fa", data)
    slow_reader.append(_once_past(2000, p.unlink))
    s = RecordStream(p)
    assert len(s.result(timeout=60)) == 200 and not p.exists()
    assert s.identity == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_predict_on_an_input_truncated_mid_run_stops_and_leaves_nothing(tmp_path, tiny_models, run_cli, slow_reader):
    """It used the reads before the cut and recorded the truncated file's checksum."""
    p = _write(tmp_path / "r.fa", reads_text(120, "fasta", lambda i: OPEN_SEQ))
    slow_reader.append(_once_past(4000, lambda: os.truncate(p, 3000)))
    out = tmp_path / "out"
    res = run_cli("predict", p, "-o", out, "--models", tiny_models, "--device", "cpu", "--no-progress",
                  "--engine", "fast", "--segment-reads", "8")
    assert res.code == 2 and "Traceback" not in res.err, str(res)
    last = res.err_lines()[-1]   # (after the synthetic-models warning)
    assert last.startswith("virnucpro: error:") and "changed while it was read" in last and str(p) in last, str(res)
    assert not out.exists() or not any(out.iterdir()), f"a refused run left {list(out.iterdir())}"


def test_predict_on_an_input_deleted_mid_run_finishes_from_the_bytes_read(tmp_path, tiny_models, run_cli, slow_reader):
    """The checksum thread reopened the input by name: 'internal error: FileNotFoundError'."""
    data = reads_text(60, "fasta", lambda i: OPEN_SEQ[: 150 + i]).encode()
    copy = _write(tmp_path / "copy.fa", data)
    p = _write(tmp_path / "r.fa", data)
    slow_reader.append(_once_past(1000, p.unlink))
    args = ["--models", tiny_models, "--device", "cpu", "--no-progress", "--engine", "fast"]
    res = run_cli("predict", p, "-o", tmp_path / "out", *args)
    assert res.code == 0, str(res)
    assert not p.exists()
    slow_reader.clear()
    assert run_cli("predict", copy, "-o", tmp_path / "ref", *args).code == 0
    for name in ("prediction_results.txt", "read_summary.tsv"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    ident = json.loads((tmp_path / "out" / "run.json").read_text())["input"]
    assert ident["sha256"] == hashlib.sha256(data).hexdigest() and ident["size"] == len(data)


def _write(path: Path, data) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path
