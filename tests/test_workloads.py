"""Synthetic read workloads: determinism, length profiles, fidelity to the genomes, errors, CLI."""

from __future__ import annotations

import argparse
import gzip
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from Bio import SeqIO

from virnucpro.errors import InputError
from virnucpro.workloads import cli as workloads_cli
from virnucpro.workloads import frame_stats
from virnucpro.prep.translate import six_frame_kept_naive
from virnucpro.workloads import genomes, reads, sample_fasta_path

ID_RE = re.compile(r"read\d{9}")
DESC_RE = re.compile(
    r"src=(?P<src>\S+) kind=(?P<kind>virus|bacteria|host) strand=(?P<strand>[+-]) "
    r"start=(?P<start>\d+) edits=(?P<edits>\d+)")
_RC = str.maketrans("ACGT", "TGCA")


def _reference(name: str) -> str:
    if name == reads.HOST_NAME:
        return reads.host_genome().decode()
    return genomes.load_genome(name).sequence.decode()


def _parse(path: Path) -> list[tuple[str, str, dict]]:
    """(id, sequence, description fields) of every record, via Biopython."""
    handle = gzip.open(path, "rt") if path.name.endswith(".gz") else open(path)
    with handle:
        out = []
        for rec in SeqIO.parse(handle, "fasta"):
            m = DESC_RE.fullmatch(rec.description.split(" ", 1)[1])
            assert m, f"description does not match the documented format: {rec.description!r}"
            out.append((rec.id, str(rec.seq), m.groupdict()))
        return out


def _mismatches(a: str, b: str) -> int:
    return sum(x != y for x, y in zip(a, b))


# --------------------------------------------------------------------------- genomes


def test_catalogue_genomes_load_with_kind_and_known_lengths():
    loaded = {g.name: g for g in genomes.load_genomes()}
    assert set(loaded) == {s.name for s in genomes.CATALOGUE}
    # NC_045512.2 is 29,903 nt; the C. diphtheriae NCTC11397 chromosome 2,463,666 nt
    assert loaded["NC_045512.2"].length == 29903, loaded["NC_045512.2"].length
    assert loaded["NZ_LN831026.1"].length == 2463666, loaded["NZ_LN831026.1"].length
    assert {g.kind for g in genomes.load_genomes("virus")} == {"virus"}
    assert {g.package for g in genomes.load_genomes("bacteria")} == {"pyrodigal"}
    for g in loaded.values():
        assert set(g.sequence) <= set(b"ACGTN"), f"{g.name}: unexpected symbols"
    # MIIJ01000039 holds a 432,770-nt N run: its segments must skip it
    segs = loaded["MIIJ01000039"].segments(1000)
    assert len(segs) == 2 and all(b"N" not in loaded["MIIJ01000039"].sequence[a:b] for a, b in segs)
    assert genomes.load_genome("phage_Agate") is genomes.load_genome("phage_Agate"), "not cached"


def test_missing_genome_package_says_how_to_install(monkeypatch):
    real_find_spec = genomes.importlib.util.find_spec
    monkeypatch.setattr(genomes.importlib.util, "find_spec",
                        lambda name, *a: None if name == "gb2seq" else real_find_spec(name, *a))
    genomes.load_genome.cache_clear()
    reads._pool.cache_clear()
    try:
        with pytest.raises(InputError, match=r"gb2seq.*pip install 'virnucpro\[genomes\]'"):
            list(reads.simulate_reads(5, seed=1))
    finally:
        genomes.load_genome.cache_clear()
        reads._pool.cache_clear()


def test_missing_data_file_is_an_input_error():
    with pytest.raises(InputError, match="lacks tests/no_such_file.fna"):
        genomes.resource_path("pyrodigal_gv", "tests/no_such_file.fna", "pyrodigal-gv")
    with pytest.raises(InputError, match="unknown genome"):
        genomes.load_genome("not_a_genome")


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_files_plain_and_gz(tmp_path):
    a, b = tmp_path / "a.fa", tmp_path / "b.fa"
    reads.write_reads_fasta(a, 300, seed=5)
    reads.write_reads_fasta(b, 300, seed=5)
    assert a.read_bytes() == b.read_bytes(), "same seed gave different FASTA"
    ga, gb = tmp_path / "a.fa.gz", tmp_path / "sub_b.fa.gz"
    reads.write_reads_fasta(ga, 300, seed=5)
    reads.write_reads_fasta(gb, 300, seed=5)
    assert ga.read_bytes()[:2] == b"\x1f\x8b", "'.gz' output is not gzip"
    assert ga.read_bytes() == gb.read_bytes(), "same seed gave different gzip bytes"
    assert gzip.decompress(ga.read_bytes()) == a.read_bytes()
    assert not list(tmp_path.glob(".*.tmp")), "temporary file left behind"


def test_different_seeds_differ_and_prefix_is_stable():
    one = list(reads.simulate_reads(200, seed=1))
    two = list(reads.simulate_reads(200, seed=2))
    same = sum(s1 == s2 for (_, s1), (_, s2) in zip(one, two))
    assert same < 20, f"seeds 1 and 2 share {same}/200 reads"
    longer = list(reads.simulate_reads(40_000, seed=1))  # spans two batches
    assert longer[:200] == one, "the first reads depend on n"
    assert len(longer) == 40_000 and len({i for i, _ in longer}) == 40_000, "ids not unique"


# --------------------------------------------------------------------------- length profiles


def test_respiratory_profile_fractions():
    lengths = np.array([len(s) for _, s in reads.simulate_reads(20_000, seed=3)])
    full = np.isin(lengths, (150, 151)).mean()
    trimmed = ((lengths >= 50) & (lengths <= 149)).mean()
    merged = ((lengths >= 200) & (lengths <= 300)).mean()
    assert abs(full - 0.80) < 0.02, f"150-151 nt: expected ~80%, saw {full:.3f}"
    assert abs(trimmed - 0.15) < 0.015, f"50-149 nt: expected ~15%, saw {trimmed:.3f}"
    assert abs(merged - 0.05) < 0.01, f"200-300 nt: expected ~5%, saw {merged:.3f}"
    assert lengths.min() >= 50 and lengths.max() <= 300, (lengths.min(), lengths.max())
    tail = lengths[(lengths >= 50) & (lengths <= 149)]
    assert np.median(tail) > 110, f"trimmed reads should skew long, median {np.median(tail)}"


def test_fixed_and_uniform_profiles():
    fixed = {len(s) for _, s in reads.simulate_reads(500, seed=4, length_profile="fixed:77")}
    assert fixed == {77}, fixed
    lens = np.array([len(s) for _, s in
                     reads.simulate_reads(5000, seed=4, length_profile="uniform:100-120")])
    assert lens.min() == 100 and lens.max() == 120, (lens.min(), lens.max())
    assert abs(lens.mean() - 110) < 0.5, f"uniform:100-120 mean {lens.mean():.2f}, expected ~110"


@pytest.mark.parametrize("spec", ["", "gaussian", "fixed:0", "fixed:abc", "fixed:999999",
                                  "uniform:10-5", "uniform:10", "respiratory:2"])
def test_bad_profile_is_input_error(spec):
    with pytest.raises(InputError, match="length profile"):
        reads.parse_length_profile(spec)


@pytest.mark.parametrize("kwargs, message", [
    ({"viral_fraction": 1.2}, "viral fraction"),
    ({"viral_fraction": 0.7, "host_fraction": 0.5}, "exceed 1"),
    ({"error_rate": -0.1}, "error rate"),
    ({"n_rate": 0.9}, "N rate"),
    ({"seed": -1}, "seed"),
    ({"n": -3}, "number of reads"),
])
def test_bad_arguments_are_input_errors(kwargs, message):
    args = {"n": 10, "seed": 1, **kwargs}
    with pytest.raises(InputError, match=message):
        list(reads.simulate_reads(**args))


# --------------------------------------------------------------------------- content


def test_reads_are_genome_substrings_when_error_free(tmp_path):
    path = tmp_path / "clean.fa"
    reads.write_reads_fasta(path, 600, seed=9, error_rate=0.0, n_rate=0.0)
    records = _parse(path)
    assert all(ID_RE.fullmatch(rid) for rid, _, _ in records), "ids are not plain readNNNNNNNNN"
    strands = Counter(d["strand"] for _, _, d in records)
    assert 0.4 < strands["-"] / len(records) < 0.6, f"strand balance {strands}"
    for rid, seq, d in records:
        start = int(d["start"])
        ref = _reference(d["src"])[start:start + len(seq)]
        expected = ref.translate(_RC)[::-1] if d["strand"] == "-" else ref
        assert seq == expected, f"{rid} ({d}) is not the genome slice"
        assert d["edits"] == "0"


def test_injected_errors_match_edit_counts(tmp_path):
    path = tmp_path / "noisy.fa"
    reads.write_reads_fasta(path, 2000, seed=10, error_rate=0.01, n_rate=0.002)
    total_edits = total_bases = n_count = 0
    for rid, seq, d in _parse(path):
        start = int(d["start"])
        ref = _reference(d["src"])[start:start + len(seq)]
        expected = ref.translate(_RC)[::-1] if d["strand"] == "-" else ref
        assert _mismatches(seq, expected) == int(d["edits"]), f"{rid}: edits field is wrong"
        total_edits += int(d["edits"])
        total_bases += len(seq)
        n_count += seq.count("N")
    rate = total_edits / total_bases
    assert 0.009 < rate < 0.0135, f"edit rate {rate:.4f}, expected ~0.012 (0.01 subs + 0.002 N)"
    assert 0.0012 < n_count / total_bases < 0.0028, f"N rate {n_count / total_bases:.4f}"


def test_composition_follows_fractions(tmp_path):
    summary = reads.write_reads_fasta(tmp_path / "c.fa", 20_000, seed=12,
                                      viral_fraction=0.2, host_fraction=0.3)
    share = {k: summary.by_kind[k] / summary.reads for k in reads.COMPONENTS}
    for kind, expected in (("virus", 0.2), ("host", 0.3), ("bacteria", 0.5)):
        assert abs(share[kind] - expected) < 0.015, f"{kind}: expected {expected}, saw {share}"
    assert sum(summary.by_genome.values()) == summary.reads == 20_000
    assert 145 < summary.mean_length < 158, f"respiratory mean length {summary.mean_length:.1f}"
    # length-weighted within a kind: phage_Agate (179 kb) outnumbers phage_Topaz (21.6 kb)
    assert summary.by_genome["phage_Agate"] > 4 * summary.by_genome["phage_Topaz"]
    only_virus = reads.write_reads_fasta(tmp_path / "v.fa", 300, seed=1, viral_fraction=1.0,
                                         host_fraction=0.0)
    assert set(only_virus.by_kind) == {"virus"}, only_virus.by_kind


def test_kept_frame_stats_match_the_spec_and_components_differ():
    sample = list(reads.simulate_reads(150, seed=13))
    stats = frame_stats.kept_frame_stats(sample, 300)
    naive = [len(six_frame_kept_naive(s)) for _, s in sample]  # reads <= 300 nt: one chunk each
    assert stats.kept_frames == sum(naive), (stats.kept_frames, sum(naive))
    assert stats.reads_with_kept == sum(k > 0 for k in naive)
    assert stats.chunks == 150
    host = frame_stats.kept_frame_stats(reads.simulate_reads(2000, 1, viral_fraction=0, host_fraction=1))
    virus = frame_stats.kept_frame_stats(reads.simulate_reads(2000, 1, viral_fraction=1, host_fraction=0))
    assert host.frames_per_read < 0.6 < virus.frames_per_read, (host.line(), virus.line())


def test_default_workload_resembles_a_respiratory_sample():
    stats = frame_stats.kept_frame_stats(reads.simulate_reads(10_000, seed=21), 300)
    assert 0.72 < stats.frames_per_read < 0.90, stats.line()
    assert 0.54 < stats.fraction_reads_with_kept < 0.65, stats.line()


# --------------------------------------------------------------------------- sample + CLI


def test_builtin_sample_exists_parses_and_is_regenerable():
    path = sample_fasta_path()
    assert path.is_file() and path.stat().st_size < 80_000, path
    records = list(SeqIO.parse(path, "fasta"))
    lengths = [len(r.seq) for r in records]
    assert len(records) == 200 and len({r.id for r in records}) == 200
    assert sum(400 <= n <= 1300 for n in lengths) == 8, sorted(lengths)[-10:]
    assert path.read_text() == reads.sample_fasta_text(), "sample.fa is not what the simulator makes"


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="virnucpro")
    workloads_cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv))


def test_cli_reads_synth(tmp_path, capsys):
    out = tmp_path / "r.fa.gz"
    args = _cli("reads", "synth", "--n", "500", "--seed", "3", "--stats", "-o", str(out))
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "wrote 500 reads" in printed and "virus" in printed, printed
    assert "kept frames at chunk length 300" in printed, printed
    assert len(_parse(out)) == 500
    bad = _cli("reads", "synth", "--n", "0", "-o", str(tmp_path / "x.fa"))
    with pytest.raises(InputError, match="--n"):
        bad.func(bad)
    bad = _cli("reads", "synth", "--n", "5", "--length-profile", "weird", "-o", str(out))
    with pytest.raises(InputError, match="length profile"):
        bad.func(bad)
    missing_dir = _cli("reads", "synth", "--n", "5", "-o", str(tmp_path / "no" / "r.fa"))
    with pytest.raises(InputError, match="does not exist"):
        missing_dir.func(missing_dir)


def test_cli_main_wires_reads_synth(tmp_path, capsys):
    from virnucpro.cli import main

    out = tmp_path / "m.fa"
    assert main(["reads", "synth", "--n", "50", "-o", str(out)]) == 0
    assert len(_parse(out)) == 50
    assert main(["reads", "synth", "--n", "5", "--viral-fraction", "0.9", "-o", str(out)]) == 2
    assert "exceed 1" in capsys.readouterr().err
