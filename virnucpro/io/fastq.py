"""FASTQ reading, the 4-line form only: ``@id description``, the sequence, ``+`` (optionally the
header again), the qualities (as many as bases). Qualities are checked for their count and ignored.

Multi-line FASTQ (sequence and qualities wrapped over several lines) is rare in sequencer output and
cannot be told apart from a damaged file reliably (a quality line may start with '@'): it is refused
like any malformed record, with one line naming the line number where the 4-line form breaks. The
record id is the header after '@' up to the first whitespace, as for FASTA. Parsed a block of text
at a time, checked in bulk where every record is well formed (the common case).
"""

from __future__ import annotations

from typing import Iterator

from virnucpro.errors import InputError
from virnucpro.io.records import NOT_NUCLEOTIDE, FlagCount, Record, bad_letters


def fastq_blocks(first: str, fh, first_line: int, name: str, block_chars: int,
                 flags: FlagCount | None = None) -> Iterator[list[Record]]:
    """The records a block at a time. ``first``: the first (header) line, already read, which is
    line ``first_line`` of the input (blank lines before it are skipped); ``fh``: the rest of the
    text; ``name``: the input for messages."""
    carry, line_no = first, first_line   # text not yet parsed (from a record's start), its first line's number
    while True:
        chunk = fh.read(block_chars)
        lines = (carry + chunk).split("\n")
        if chunk:
            tail = lines.pop()            # a partial last line ('' after a newline)
            n = len(lines) // 4 * 4       # whole records
        else:
            tail = ""
            while lines and not lines[-1].strip():   # blank lines at the end of the file
                lines.pop()
            n = len(lines)
        if n:
            yield _records(lines[:n], line_no, name, flags)
        if not chunk:
            return
        carry = "\n".join(lines[n:] + [tail])
        line_no += n


def _records(lines: list[str], line_no: int, name: str, flags: FlagCount | None) -> list[Record]:
    """Whole records (4 lines each) starting at line ``line_no``; InputError at the first bad one."""
    heads, seqs, plus, quals = lines[0::4], lines[1::4], lines[2::4], lines[3::4]
    joined = "".join(seqs)
    ok = (len(quals) == len(heads)
          and all(h[:1] == "@" for h in heads) and all(p == "+" for p in plus)
          and all(len(s) == len(q) for s, q in zip(seqs, quals))
          and not NOT_NUCLEOTIDE.search(joined))
    if ok:
        ids = [h[1:].split(None, 1)[0] if h[1:].strip() else "" for h in heads]
        ok = all(ids)
    if not ok:   # the record-by-record rules: the same records, or the first bad one named
        return _records_slowly(lines, line_no, name, flags)
    records = [Record(i, s) for i, s in zip(ids, seqs)]
    if flags is not None:
        flags.add(records, joined)
    return records


def _records_slowly(lines: list[str], line_no: int, name: str, flags: FlagCount | None) -> list[Record]:
    out = []
    for k in range(0, len(lines), 4):
        ln = line_no + k

        def fail(offset: int, what: str):
            return InputError(f"{name}: line {ln + offset}: {what} (FASTQ records are 4 lines: @header, "
                              "sequence, '+', qualities)")

        head = lines[k].rstrip()
        if not head.startswith("@"):
            raise fail(0, "expected a header line starting with '@', found "
                       + (repr(head[:40]) if head.strip() else "a blank line"))
        title = head[1:]
        rid = title.split(None, 1)[0] if title.strip() else ""
        if not rid:
            raise fail(0, "a record has an empty header ('@' with no id)")
        if k + 3 >= len(lines):
            raise fail(len(lines) - k, f"the input ends inside record {rid!r}")
        seq, sep, qual = lines[k + 1].rstrip(), lines[k + 2].rstrip(), lines[k + 3].rstrip()
        if not sep.startswith("+"):
            raise fail(2, f"expected the '+' line of record {rid!r}, found {sep[:40]!r} "
                       "(multi-line FASTQ is not supported)")
        if sep[1:] and sep[1:] != title.rstrip():
            raise fail(2, f"the '+' line of record {rid!r} repeats another header: {sep[:40]!r}")
        if len(qual) != len(seq):
            raise fail(3, f"record {rid!r} has {len(qual)} quality values for {len(seq)} bases")
        if NOT_NUCLEOTIDE.search(seq):
            raise InputError(f"{name}: line {ln + 1}: record {rid!r} holds characters that are not "
                             f"nucleotide codes: {bad_letters(seq)!r}")
        out.append(Record(rid, seq))
    if flags is not None:
        flags.add(out)
    return out
