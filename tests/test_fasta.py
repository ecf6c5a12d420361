"""FASTA reading: the inputs real users have, and clear one-line errors for the rest."""

import gzip

import pytest

from virnucpro.errors import InputError
from virnucpro.io.fasta import read_fasta


def write(tmp_path, name, text, mode="w"):
    p = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(p, "wt") as fh:
            fh.write(text)
    else:
        p.write_bytes(text.encode()) if isinstance(text, str) else p.write_bytes(text)
    return p


def test_id_is_header_up_to_first_whitespace_and_multiline_joined(tmp_path):
    p = write(tmp_path, "a.fa", ">r1 some description\nACGT\nacgt\n>r2\tx\nNNRY\n")
    recs = read_fasta(p)
    assert [(r.id, r.seq) for r in recs] == [("r1", "ACGTacgt"), ("r2", "NNRY")]


def test_windows_line_endings_and_gzip(tmp_path):
    text = ">r1 d\r\nACGT\r\nAC\r\n>r2\r\nGG\r\n"
    for name in ("crlf.fa", "crlf.fa.gz"):
        recs = read_fasta(write(tmp_path, name, text))
        assert [(r.id, r.seq) for r in recs] == [("r1", "ACGTAC"), ("r2", "GG")], name


def test_gzip_detected_by_content_not_name(tmp_path):
    p = tmp_path / "reads.fa"
    p.write_bytes(gzip.compress(b">x\nACGT\n"))
    assert read_fasta(p)[0].seq == "ACGT"


@pytest.mark.parametrize("content,message", [
    ("", "empty"),
    ("\n\n", "empty"),
    ("hello world\nACGT\n", "not a FASTA or FASTQ"),
    ("@read1\nACGT\nACGT\n+\nIIIIIIII\n", "line 3"),      # multi-line FASTQ
    ("@read1\nACGT\n+\nIIII\n@read2\nAC\n+\nIII\n", "line 8"),   # qualities != bases
    (">r1\n\n>r2\n", "empty sequence"),
    (">r1\nACGT\n>r1\nGGGG\n", "duplicate record id"),
    (">r1\nACGTQZ\n", "not nucleotide codes"),
    (">p1\nMKXWVTFISLLX\n", "not nucleotide codes"),   # protein with X: still refused
    (">\nACGT\n", "empty header"),
])
def test_bad_inputs_raise_one_line_input_errors(tmp_path, content, message):
    p = write(tmp_path, "bad.fa", content)
    with pytest.raises(InputError, match=message) as exc:
        read_fasta(p)
    assert "\n" not in str(exc.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_fasta(tmp_path / "nope.fa")
    with pytest.raises(InputError, match="directory"):
        read_fasta(tmp_path)


def test_duplicate_ids_can_be_renamed(tmp_path):
    p = write(tmp_path, "d.fa", ">r1\nAC\n>r1\nGG\n>r1\nTT\n>r1_dup2\nCC\n")
    ids = [r.id for r in read_fasta(p, duplicate_ids="rename")]
    assert len(ids) == len(set(ids)) == 4, ids
    assert ids[0] == "r1"


def test_empty_records_are_kept_but_yield_nothing(tmp_path):
    recs = read_fasta(write(tmp_path, "e.fa", ">r1\n>r2\nACGT\n"))
    assert [(r.id, r.seq) for r in recs] == [("r1", ""), ("r2", "ACGT")]


# ------------------------------------------------------------------ the block parser vs Biopython

def _biopython_records(text: str) -> list[tuple[str, str]] | str:
    """What the rules say, from Biopython's SimpleFastaParser plus ours (id = first word, tabs
    removed, nucleotide codes only): the records, or 'error' where an InputError is due."""
    import io as _io
    from Bio.SeqIO.FastaIO import SimpleFastaParser
    from virnucpro.io.fasta import _ALLOWED
    out = []
    for title, seq in SimpleFastaParser(_io.StringIO(text, newline=None)):
        rid = title.split(None, 1)[0] if title.strip() else ""
        seq = seq.replace("\t", "")
        if not rid or set(seq.encode("ascii", "replace")) - _ALLOWED:
            return "error"
        out.append((rid, seq))
    return out


def _random_fasta(rng) -> str:
    parts = []
    if rng.random() < 0.2:
        parts.append("\n" * int(rng.integers(1, 3)))
    for i in range(int(rng.integers(1, 12))):
        head = rng.choice([f"r{i}", f"r{i} desc", f"r{i}\t x ", f" r{i}", f"r{i}  "] * 6 + ["  "])
        parts.append(f">{head}\n")
        for _ in range(int(rng.integers(0, 4))):   # 0 to 3 sequence lines
            line = "".join(rng.choice(list("ACGTNacgtn"), size=int(rng.integers(0, 9))))
            odd = rng.random()
            if odd < 0.08:
                line += " "
            elif odd < 0.12:
                line = line[:2] + " \t" + line[2:]
            elif odd < 0.14:
                line += "@"
            parts.append(line + "\n")
    text = "".join(parts)
    if rng.random() < 0.3:
        text = text.rstrip("\n")
    if rng.random() < 0.2:
        text = text.replace("\n", "\r\n")
    return text


@pytest.mark.parametrize("block_chars", [1 << 24, 5, 17])
def test_block_parser_gives_what_biopython_gives(tmp_path, monkeypatch, block_chars):
    """The block-at-a-time parser (bulk path for two-line records, record-by-record otherwise) reads
    every file as Biopython's parser plus our rules would: same ids and sequences, same refusals,
    whatever the block size (records split across blocks)."""
    import numpy as np
    from virnucpro.io import fasta
    monkeypatch.setattr(fasta, "_BLOCK_CHARS", block_chars)
    rng = np.random.default_rng(block_chars)
    for k in range(150):
        text = _random_fasta(rng)
        path = tmp_path / f"f{k}.fa"
        path.write_bytes(text.encode())
        want = _biopython_records(text)
        try:
            got = [(r.id, r.seq) for r in fasta.iter_fasta(path)]
        except InputError:
            got = "error"
        assert got == want, f"file {k} (block {block_chars}): {text!r}\nparsed {got}\nexpected {want}"


# ------------------------------------------------------------------ reading in a thread (RecordStream)

@pytest.fixture(params=[1, 40, 1 << 24], ids=["block-per-record", "small-blocks", "one-block"])
def block_chars(request, monkeypatch):
    """Parse the file in blocks of this many characters (the reader's unit of work)."""
    from virnucpro.io import fasta
    monkeypatch.setattr(fasta, "_BLOCK_CHARS", request.param)
    return request.param


def test_renaming_is_the_same_across_blocks(tmp_path, block_chars):
    """The k-th repeat of ID becomes ID_dupK, counting further past ids already seen (a literal
    'r1_dup2' earlier in the file, or a renamed one), whatever block the repeat falls in."""
    p = write(tmp_path, "d.fa", ">r1\nAC\n>r2\nGG\n>r1\nTT\n>r1_dup2\nCC\n>r1\nAA\n>r2\nA\n")
    ids = [r.id for r in read_fasta(p, duplicate_ids="rename")]
    assert ids == ["r1", "r2", "r1_dup2", "r1_dup2_dup2", "r1_dup3", "r2_dup2"], ids


def test_duplicates_in_different_blocks_are_refused(tmp_path, block_chars):
    p = write(tmp_path, "d.fa", ">r1\nAC\n>r2\nGG\n>r3\nTT\n>r1\nCC\n")
    with pytest.raises(InputError, match="1 duplicate record id.*r1"):
        read_fasta(p)


def test_stream_gives_the_records_so_far_then_the_checked_list(tmp_path, block_chars):
    from virnucpro.io.fasta import RecordStream
    text = "".join(f">r{i} x\nACGT{'A' * i}\n" for i in range(50))
    s = RecordStream(write(tmp_path, "s.fa", text))
    assert s.wait(10, timeout=30), "the reader thread never got past 10 records"
    recs = s.result(timeout=30)
    assert s.done and not s.failed and s.read_s is not None
    assert [(r.id, r.seq) for r in recs] == [(f"r{i}", "ACGT" + "A" * i) for i in range(50)]
    assert s.expected_reads() == 50 and s.records is recs


@pytest.mark.parametrize("tail, needle", [(">bad\nMKWVJJ\n", "not nucleotide"), (">r0\nACGT\n", "duplicate")])
def test_stream_raises_what_the_end_of_the_file_earns(tmp_path, block_chars, tail, needle):
    """The records before the bad one are there (the run may have worked on them); result() raises."""
    from virnucpro.io.fasta import RecordStream
    text = "".join(f">r{i}\nACGT\n" for i in range(20)) + tail
    s = RecordStream(write(tmp_path, "bad.fa", text))
    with pytest.raises(InputError, match=needle):
        s.result(timeout=30)
    assert s.failed
    if block_chars == 1:
        assert len(s.records) >= 20, "records read before the bad one should be available"


def test_expected_reads_scales_by_the_share_of_the_file_read(tmp_path):
    from virnucpro.io.fasta import RecordStream
    s = RecordStream(write(tmp_path, "e.fa", ">a\nAC\n"), background=False)
    s._done, s.n_read, s.fraction = False, 10, 0.25   # as if a quarter was read
    assert s.expected_reads() == 40


def test_stream_pauses_after_enough_records_while_told(tmp_path, monkeypatch):
    """While the models load in this process, the reader stops once it is a little ahead."""
    import threading
    import time
    from virnucpro.io import fasta
    monkeypatch.setattr(fasta, "_BLOCK_CHARS", 40)   # a few records per block
    text = "".join(f">r{i}\nACGTACGT\n" for i in range(200))
    loaded = threading.Event()
    s = fasta.RecordStream(write(tmp_path, "p.fa", text), pause_while=lambda: not loaded.is_set(), pause_after=20)
    assert s.wait(19, timeout=30)
    time.sleep(0.3)
    paused_at = len(s.records)
    assert 20 <= paused_at < 200 and not s.done, f"reader should pause after 20 records, has {paused_at}"
    loaded.set()
    assert len(s.result(timeout=30)) == 200
