"""The samples of a multi-sample ``predict``: from several input paths (ids derived from the file
names) or from a sample sheet (``--samples sheet.tsv``), checked before any work starts.

Sample sheet: tab-separated, a header line ``sample<TAB>path``, then one sample per line. Lines
starting with ``#`` and blank lines are skipped; a relative path is relative to the sheet's folder::

    # sample    path
    sample\tpath
    gut_01\treads/gut_01.fastq.gz
    gut_02\t/data/run7/gut_02.fq.gz

A sample id names the sample's output folder (OUTROOT/<id>/), so it must be safe as a file name on
any file system: letters, digits, ``_``, ``-`` and ``.``, not starting with ``.``, at most 128
characters; ids must be unique, also ignoring case (two ids that differ only in case would share a
folder on macOS's and Windows' file systems). Every problem is an ``InputError`` (exit 2, one line
naming the sheet's line or the file), raised before a model is loaded or a folder made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from virnucpro.errors import InputError
from virnucpro.io.paths import SAMPLES_SUMMARY

SHEET_HEADER = ("sample", "path")
READ_SUFFIXES = (".fasta", ".fastq", ".fas", ".fna", ".fa", ".fq")   # stripped (after .gz) from a file name
SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class Sample:
    id: str          # its output folder's name under OUTROOT
    path: Path       # its reads (FASTA or FASTQ, plain or gzip)


def derive_id(path: str | Path) -> str:
    """The sample id a file name gives: its name without ``.gz`` and then without one of
    ``.fa .fasta .fas .fna .fq .fastq`` (``gut_01.fastq.gz`` -> ``gut_01``)."""
    name = Path(path).name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    for suffix in READ_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def check_id(sample_id: str, where: str) -> None:
    """InputError unless ``sample_id`` can name a folder safely (see the module docstring)."""
    if not SAFE_ID.fullmatch(sample_id) or sample_id == SAMPLES_SUMMARY:
        raise InputError(f"{where}: sample id {sample_id!r} cannot name an output folder: use letters, digits, "
                         "'_', '-' and '.' only, not starting with '.' or '-', at most 128 characters")


def samples_from_paths(paths: list[Path]) -> list[Sample]:
    """Samples named after their files; two files that give one id are refused, both named."""
    seen: dict[str, Path] = {}
    out = []
    for p in paths:
        if str(p) == "-":
            raise InputError("standard input ('-') can be the input of a single-sample run only, not one of "
                             "several inputs")
        sid = derive_id(p)
        check_id(sid, f"input {p}")
        clash = seen.get(sid.lower())
        if clash is not None:
            what = "the same file given twice" if Path(clash).resolve() == Path(p).resolve() else \
                "two inputs"
            raise InputError(f"inputs {clash} and {p} both give sample id {sid!r} ({what}); rename one, or "
                             "name the samples in a sheet with --samples")
        seen[sid.lower()] = p
        out.append(Sample(sid, Path(p)))
    _check_files(out, lambda s: f"input {s.path}")
    return out


def read_sheet(sheet: str | Path) -> list[Sample]:
    """The samples of a sample sheet (format in the module docstring), checked: header, two
    columns per line, ids safe and unique, every path an existing file."""
    sheet = Path(sheet)
    try:
        text = sheet.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"--samples {sheet}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"--samples {sheet}: is a directory, not a sample sheet") from None
    except UnicodeDecodeError:
        raise InputError(f"--samples {sheet}: not a text file (a sample sheet is tab-separated text)") from None
    header_seen = False
    samples: list[Sample] = []
    lines: dict[str, int] = {}      # id (lower case) -> its line
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        where = f"--samples {sheet}, line {n}"
        if not header_seen:
            if tuple(f.strip().lower() for f in fields) != SHEET_HEADER:
                raise InputError(f"{where}: the first line must be the header 'sample<TAB>path' (tab-separated), "
                                 f"not {line[:60]!r}")
            header_seen = True
            continue
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            raise InputError(f"{where}: expected two tab-separated fields, sample id and path, got {line[:80]!r}")
        sid, path = fields[0].strip(), fields[1].strip()
        check_id(sid, where)
        if sid.lower() in lines:
            first = lines[sid.lower()]
            raise InputError(f"{where}: sample id {sid!r} already used on line {first} (ids must be unique, "
                             "ignoring case)")
        lines[sid.lower()] = n
        p = Path(path).expanduser()
        samples.append(Sample(sid, p if p.is_absolute() else sheet.parent / p))
    if not header_seen:
        raise InputError(f"--samples {sheet}: empty sample sheet (expected a header 'sample<TAB>path' and one "
                         "line per sample)")
    if not samples:
        raise InputError(f"--samples {sheet}: no samples listed under the header")
    _check_files(samples, lambda s: f"--samples {sheet}, line {lines[s.id.lower()]} ({s.id})")
    return samples


def _check_files(samples: list[Sample], where) -> None:
    for s in samples:
        if not s.path.exists():
            raise InputError(f"{where(s)}: {s.path}: file not found")
        if s.path.is_dir():
            raise InputError(f"{where(s)}: {s.path}: is a directory, not a reads file")
