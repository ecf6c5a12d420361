"""Reading model files without running them: the one loader every pickled model file goes through,
and a check of safetensors headers before anything trusts them.

Pickled files (fair-esm ``.pt``, DNABERT-S ``pytorch_model.bin``, the classifiers' ``.pth``) are read
by torch's weights-only unpickler, handed to torch.serialization's reader here directly. ``torch.load``
decides between that unpickler and plain ``pickle`` from its arguments and the environment:
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns weights-only off wherever the caller did not pass
``weights_only`` -- as fair-esm's own loader does not, which let a planted ``__reduce__`` in an ESM-2
checkpoint run. Here no argument or variable can bring plain ``pickle`` back. Beyond tensors and plain
containers, a file may name only the globals its caller allows (``argparse.Namespace`` for fair-esm's
arguments; the classifier's module layout); anything else is refused before any of it runs.

Safetensors files are a JSON header and raw bytes. ``safetensors_header`` checks the header length
against the file, the JSON, and every tensor's byte range before the library or the fingerprint
reads it (garbage, an absurd length or an empty file used to end in "internal error").
"""

from __future__ import annotations

import json
import os
import pickle
import re
import threading
import zipfile
from pathlib import Path
from typing import Any, Iterable

from virnucpro.errors import ModelError

SAFETENSORS_MAX_HEADER = 100 << 20     # the safetensors library refuses longer headers too
# torch keeps the weights-only unpickler's extra allowed globals in one process-wide set that
# ``safe_globals`` replaces on entry and restores on exit: two loads in two threads (the fast engine
# loads ESM-2 in a thread while the main thread loads the classifier) took each other's allow-list
# away mid-read, and a clean checkpoint was refused. One pickled load at a time; the big ones map
# their file (mmap) instead of reading it, so the wait is short.
_ALLOW_LIST_LOCK = threading.Lock()


def _refusal(what: str, path: Path, exc: Exception) -> ModelError:
    m = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)", str(exc))
    named = f"it references {m.group(1)}" if m else "it holds objects outside the allowed layout"
    return ModelError(f"refusing to load {what} {path}: {named}, which a model file of this kind never "
                      "contains (nothing from the file was executed)")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def load_pickled(path: str | Path, allowed: Iterable = (), *, what: str = "model file", mmap: bool = False) -> Any:
    """The object in a ``torch.save`` file (zip or legacy format), tensors on the CPU, read by the
    weights-only unpickler with ``allowed`` globals (classes, or (class, "module.Name") pairs) added.
    ``mmap``: tensors map the file instead of being read (zip format only). ModelError names the file
    when it is missing, empty, truncated, not a torch file, or names a global outside the allow-list."""
    import torch

    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ModelError(f"{what} not found: {path}") from None
    if size == 0:
        raise ModelError(f"{what} {path} is empty (0 bytes): download or copy it again")
    try:
        with _ALLOW_LIST_LOCK, torch.serialization.safe_globals(list(allowed)), open(path, "rb") as fh:
            return _weights_only_read(fh, path, size, mmap)
    except pickle.UnpicklingError as exc:
        if re.search(r"global|GLOBAL|not an allowed|blocked", str(exc)):
            raise _refusal(what, path, exc) from None
        raise ModelError(f"cannot read {what} {path}: {_first_line(exc)} (damaged or not a torch file?)") from None
    except ModelError:
        raise
    except Exception as exc:   # truncated zip, bad magic number, short read ...
        raise ModelError(f"cannot read {what} {path}: {type(exc).__name__}: {_first_line(exc)} "
                         "(truncated or damaged? download or copy it again)") from None


def _weights_only_read(fh, path: Path, size: int, mmap: bool) -> Any:
    import torch
    ser = torch.serialization
    try:
        from torch import _weights_only_unpickler as unpickler
        load, legacy_load = ser._load, ser._legacy_load
    except (ImportError, AttributeError):   # another torch: its public switch, passed explicitly
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    if ser._is_zipfile(fh):
        storage = torch.UntypedStorage.from_file(os.fspath(path), False, size) if mmap else None
        with ser._open_zipfile_reader(fh) as zf:
            if ser._is_torchscript_zip(zf):
                raise ModelError(f"{path} is a TorchScript archive (code), not a weights file")
            return load(zf, "cpu", unpickler, overall_storage=storage, encoding="utf-8")
    head = fh.read(64)
    fh.seek(0)
    if head.startswith(b"version https://git-lfs"):
        raise ModelError(f"{path} is a Git LFS pointer ({size} bytes), not the file it points to: "
                         "fetch the file itself (`git lfs pull`, or `virnucpro models download`)")
    return legacy_load(fh, "cpu", unpickler, encoding="utf-8")


def check_zip_records(path: str | Path, what: str = "model file") -> bool:
    """Read every record of a zip-format torch file and check its CRC-32 (a full read that catches
    truncation and flipped bytes without unpickling). False for a legacy (non-zip) file."""
    path = Path(path)
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            return False
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ModelError(f"{what} {path} is damaged: {_first_line(exc)} (truncated? download or copy it "
                         "again)") from None
    if bad is not None:
        raise ModelError(f"{what} {path} is damaged: record {bad} fails its CRC check (download or copy it again)")
    return True


def safetensors_header(path: str | Path, what: str = "model file") -> dict:
    """The JSON header of a safetensors file, checked: length within the file, a JSON object, every
    tensor's data_offsets inside the data section and the data section exactly covered (a truncated
    or padded file fails). ModelError names the file otherwise."""
    path = Path(path)
    size = path.stat().st_size
    bad = f"cannot read {what} {path}: not a valid safetensors file"
    if size < 8:
        raise ModelError(f"{bad}: {size} bytes (empty or cut short)")
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if n > min(SAFETENSORS_MAX_HEADER, size - 8):
            raise ModelError(f"{bad}: its header claims {n:,} bytes, the file holds {size:,}")
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ModelError(f"{bad}: its header is not JSON") from None
    if not isinstance(header, dict):
        raise ModelError(f"{bad}: its header is not a JSON object")
    data_len, covered = size - 8 - n, 0
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict):
                raise ModelError(f"{bad}: __metadata__ is not an object")
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(x, int) for x in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise ModelError(f"{bad}: tensor {name!r} has no valid data_offsets")
        if offsets[1] > data_len:
            raise ModelError(f"{bad}: tensor {name!r} ends at byte {offsets[1]:,} of a {data_len:,}-byte data "
                             "section (truncated? download or copy it again)")
        covered = max(covered, offsets[1])
    if covered != data_len:
        raise ModelError(f"{bad}: its tensors cover {covered:,} of the {data_len:,} data bytes (damaged)")
    return header


def load_safetensors(path: str | Path, what: str = "model file") -> tuple[dict, dict]:
    """(state dict on the CPU, metadata) of a safetensors file whose header passed the check."""
    header = safetensors_header(path, what)
    from safetensors.torch import load_file
    try:
        return load_file(str(path)), dict(header.get("__metadata__") or {})
    except Exception as exc:
        raise ModelError(f"cannot read {what} {path}: {_first_line(exc)}") from None
