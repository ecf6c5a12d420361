"""virnucpro.core.files: a file is written whole or not at all, and the sha256 of a file."""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile

import pytest

from virnucpro.core.files import FILE_MODE, atomic_bytes, atomic_path, atomic_write, sha256_file


def listing(d) -> list[str]:
    return sorted(p.name for p in d.iterdir())


@pytest.mark.parametrize("mode, data", [("w", "line one\nline two é\n"), ("wb", b"\x00\x01binary\r\n")])
def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path, mode, data) -> None:
    path = tmp_path / "out.txt"
    path.write_bytes(b"old")
    with atomic_write(path, mode) as fh:
        fh.write(data)
        assert path.read_bytes() == b"old", "the file changed before the block ended"
    want = data.encode("utf-8") if isinstance(data, str) else data
    assert path.read_bytes() == want
    assert listing(tmp_path) == ["out.txt"], "a temp file was left beside the output"
    assert stat.S_IMODE(path.stat().st_mode) == FILE_MODE, "not the permissions open() would give"


@pytest.mark.parametrize("fsync", [False, True])
def test_atomic_write_on_error_keeps_the_old_file_and_removes_the_temp(tmp_path, fsync) -> None:
    path = tmp_path / "prediction_results.txt"
    path.write_text("previous run\n")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_write(path, fsync=fsync) as fh:
            fh.write("half of the new file")
            raise RuntimeError("disk on fire")
    assert path.read_text() == "previous run\n", "a failed write damaged the previous file"
    assert listing(tmp_path) == ["prediction_results.txt"], f"temp left: {listing(tmp_path)}"


def test_atomic_write_into_a_new_name_on_error_leaves_nothing(tmp_path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "new.bin", "wb") as fh:
            fh.write(b"x")
            raise KeyboardInterrupt
    assert listing(tmp_path) == []


def test_atomic_write_fsyncs_before_the_rename_when_asked(tmp_path, monkeypatch) -> None:
    path = tmp_path / "unit.npz"
    synced: list[bool] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(path.exists()), real(fd)))
    atomic_bytes(path, b"checkpoint")
    assert synced == [False], "atomic_bytes must fsync once, before the file appears under its name"
    atomic_bytes(tmp_path / "segment.pkl", b"segment", fsync=False)
    assert len(synced) == 1, "fsync=False must not sync"
    assert path.read_bytes() == b"checkpoint"


def test_atomic_path_keeps_the_torch_archive_name_and_cleans_up(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from virnucpro.models.layout import atomic_torch_save
    path = tmp_path / "esm2_t2.pt"
    atomic_torch_save({"w": torch.arange(3)}, path)
    (tmp_path / "old").mkdir()
    old = tmp_path / "old" / "esm2_t2.pt.tmp"              # the name the code before core.files saved under
    torch.save({"w": torch.arange(3)}, old)
    assert path.read_bytes() == old.read_bytes(), \
        "atomic_torch_save must give the bytes of torch.save to NAME.tmp (stable model fingerprints)"
    assert zipfile.ZipFile(path).namelist()[0].startswith("esm2_t2.pt/")
    assert listing(tmp_path) == ["esm2_t2.pt", "old"], "temp folder left behind"


def test_atomic_path_on_error_keeps_the_old_file(tmp_path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old weights")
    with pytest.raises(OSError):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise OSError("no space left on device")
    assert path.read_bytes() == b"old weights"
    assert listing(tmp_path) == ["model.safetensors"]


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096 + 17])
def test_sha256_file_matches_hashlib(tmp_path, size) -> None:
    data = os.urandom(size)
    path = tmp_path / "reads.fa"
    path.write_bytes(data)
    assert sha256_file(path, block=4096) == hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_input_fingerprint_is_size_and_sha256_of_the_bytes_read(tmp_path) -> None:
    """The run's input identity is what the reader hashed while parsing (never the file reopened)."""
    from virnucpro.io.fasta import RecordStream
    from virnucpro.run.rundir import input_fingerprint
    path = tmp_path / "reads.fa"
    path.write_bytes(b">r1\nACGT\n")
    assert input_fingerprint(RecordStream(path, "error")) == \
        {"size": 9, "sha256": hashlib.sha256(b">r1\nACGT\n").hexdigest()}