"""Real genomes that synthetic read workloads are sampled from.

The genomes are not copied into this repository: they are files that three PyPI packages already
ship (install them with ``pip install 'virnucpro[genomes]'``):

==============  =========  ==========================================================================
package         kind       genomes (file inside the installed package)
==============  =========  ==========================================================================
gb2seq          virus      SARS-CoV-2: RefSeq NC_045512.2 (Wuhan-Hu-1) and four GISAID isolates
                           (``gb2seq/data/*.fasta``), about 29.9 kb each
pyrodigal-gv    virus      two tailed phages assembled from metagenomes, ``phage_Agate`` (179 kb)
                           and ``phage_Topaz`` (21.6 kb) (``pyrodigal_gv/tests/*.fna``)
pyrodigal       bacteria   Corynebacterium diphtheriae NCTC11397 chromosome (2.46 Mb, 53 % GC),
                           contig MIIJ01000039 (870 kb, half of it one N run; its header names
                           NCBI taxon 562, E. coli, though its 26 % GC does not fit), a Kutzneria
                           sp. 744 scaffold KK037166.1 (20 kb, 66 % GC) and a metagenome contig
                           SRR492066 NODE_23 (80 kb, 30 % GC) (``pyrodigal/tests/data/*.fna.gz``)
==============  =========  ==========================================================================

Only the plain genome files are used (not pyrodigal's ``.meta``/``.single``/``.mask`` gene
predictions, nor the 100 kb excerpt of the C. diphtheriae genome, which would count it twice).
Files are located through the import system without importing the packages (importing
``pyrodigal_gv`` builds its gene models, about a second) and parsed once per process.
Runs of ``N`` split a genome into N-free *segments*; reads are only drawn from segments.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from virnucpro.errors import InputError

INSTALL_HINT = "pip install 'virnucpro[genomes]'"

KINDS = ("virus", "bacteria")


@dataclass(frozen=True)
class GenomeSource:
    """Where one genome lives: the PyPI distribution, its import name and the file inside it."""

    name: str  # short accession-like name, no whitespace (it goes into read descriptions)
    kind: str  # "virus" or "bacteria"
    distribution: str  # PyPI name, for messages
    package: str  # import name
    resource: str  # path relative to the package directory
    organism: str


CATALOGUE: tuple[GenomeSource, ...] = (
    GenomeSource("NC_045512.2", "virus", "gb2seq", "gb2seq", "data/NC_045512.2.fasta",
                 "SARS-CoV-2 Wuhan-Hu-1 (RefSeq)"),
    GenomeSource("EPI_ISL_402125", "virus", "gb2seq", "gb2seq", "data/EPI_ISL_402125.fasta",
                 "SARS-CoV-2 hCoV-19/Wuhan-Hu-1/2019"),
    GenomeSource("BavPat2", "virus", "gb2seq", "gb2seq", "data/BavPat2.fasta",
                 "SARS-CoV-2 BetaCoV/Munich/BavPat2/2020"),
    GenomeSource("EPI_ISL_601443", "virus", "gb2seq", "gb2seq", "data/EPI_ISL_601443.fasta",
                 "SARS-CoV-2 hCoV-19/England/MILK-9E05B3/2020"),
    GenomeSource("EPI_ISL_678597", "virus", "gb2seq", "gb2seq", "data/EPI_ISL_678597.fasta",
                 "SARS-CoV-2 hCoV-19/South Africa/KRISP-EC-K005299/2020"),
    GenomeSource("phage_Agate", "virus", "pyrodigal-gv", "pyrodigal_gv", "tests/phage_Agate.fna",
                 "phage Agate (Cattle_ERR2019372_scaffold_259737)"),
    GenomeSource("phage_Topaz", "virus", "pyrodigal-gv", "pyrodigal_gv", "tests/phage_Topaz.fna",
                 "phage Topaz (baboon_AMB_003_scaffold_97232)"),
    GenomeSource("NZ_LN831026.1", "bacteria", "pyrodigal", "pyrodigal",
                 "tests/data/GCF_001457455.1_NCTC11397_genomic.fna.gz",
                 "Corynebacterium diphtheriae NCTC11397 chromosome"),
    GenomeSource("MIIJ01000039", "bacteria", "pyrodigal", "pyrodigal",
                 "tests/data/MIIJ01000039.fna.gz", "contig 562.SAMN05730656.MIIJ01000039"),
    GenomeSource("KK037166.1", "bacteria", "pyrodigal", "pyrodigal",
                 "tests/data/KK037166.fna.gz", "Kutzneria sp. 744 genomic scaffold supercont1.1"),
    GenomeSource("SRR492066_NODE_23", "bacteria", "pyrodigal", "pyrodigal",
                 "tests/data/SRR492066.fna.gz", "metagenome assembly contig (SRR492066 NODE_23)"),
)


@dataclass(frozen=True)
class Genome:
    """One parsed genome: upper-case ASCII bases, plus where it came from."""

    source: GenomeSource
    header: str  # the FASTA header line of the file, without '>'
    sequence: bytes  # upper-case; only A C G T and N occur in the shipped files

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def kind(self) -> str:
        return self.source.kind

    @property
    def package(self) -> str:
        return self.source.distribution

    @property
    def length(self) -> int:
        return len(self.sequence)

    def segments(self, min_length: int = 1) -> list[tuple[int, int]]:
        """Half-open [start, end) stretches free of N, at least ``min_length`` long."""
        spans = [m.span() for m in re.finditer(rb"[^N]+", self.sequence)]
        return [(a, b) for a, b in spans if b - a >= min_length]


def resource_path(package: str, resource: str, distribution: str) -> Path:
    """Path of a file shipped inside an installed package, without importing the package.

    Raises InputError (with the install hint) when the package or the file is missing.
    """
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise InputError(
            f"the genome package '{distribution}' is not installed; run: {INSTALL_HINT}")
    locations = list(spec.submodule_search_locations or [])
    if locations:
        path = Path(locations[0]) / resource
    else:  # an unusual loader (e.g. a zip): let importlib.resources import and resolve it
        path = Path(str(importlib.resources.files(package).joinpath(resource)))
    if not path.is_file():
        raise InputError(
            f"'{distribution}' is installed but lacks {resource} (a build without its data "
            f"files?); reinstall it with: {INSTALL_HINT}")
    return path


def _parse_single_fasta(raw: bytes, where: str) -> tuple[str, bytes]:
    """(header, upper-case sequence) of the first record of a FASTA file's bytes."""
    text = raw.lstrip()
    if not text.startswith(b">"):
        raise InputError(f"{where} is not a FASTA file")
    header, _, body = text[1:].partition(b"\n")
    body = body.split(b"\n>", 1)[0]
    sequence = re.sub(rb"\s+", b"", body).upper()
    return header.decode("ascii", "replace").strip(), sequence


@functools.lru_cache(maxsize=None)
def load_genome(name: str) -> Genome:
    """Load (once per process) the catalogue genome called ``name``."""
    by_name = {s.name: s for s in CATALOGUE}
    if name not in by_name:
        raise InputError(f"unknown genome '{name}'; known: {', '.join(by_name)}")
    source = by_name[name]
    path = resource_path(source.package, source.resource, source.distribution)
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    header, sequence = _parse_single_fasta(raw, str(path))
    return Genome(source=source, header=header, sequence=sequence)


def load_genomes(kind: str | None = None) -> list[Genome]:
    """All catalogue genomes (or those of one kind, "virus" or "bacteria"), in catalogue order."""
    if kind is not None and kind not in KINDS:
        raise InputError(f"unknown genome kind '{kind}'; expected one of {', '.join(KINDS)}")
    return [load_genome(s.name) for s in CATALOGUE if kind is None or s.kind == kind]
