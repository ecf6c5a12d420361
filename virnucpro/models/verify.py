"""`virnucpro models check`: every file of a model set read in full, and each loaded as a run loads it.

Per file: its sha256 over every byte (compared with the hash recorded by `virnucpro models download`
in ``MODELS_DIR/virnucpro-models.json``, where there is one), then a load: the ESM-2 checkpoint and
the pickled files have every zip record's CRC-32 checked and are read weights-only; the DNABERT-S
config and tokenizer are parsed, its weights loaded into the model; the classifier is loaded for the
chunk length. A damaged file (a truncated checkpoint, a tokenizer cut short, bytes that differ from
the recorded hash) is named; the check fails with ModelError (exit 2) after listing every file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from virnucpro.errors import ModelError
from virnucpro.models.layout import ModelSet

RECORD_NAME = "virnucpro-models.json"   # written by `models download`: {"files": {relpath: {sha256, size, ...}}}


@dataclass
class FileCheck:
    path: Path
    size: int
    sha256: str
    problem: str | None = None
    recorded: bool = False      # its bytes matched a recorded sha256


def sha256_file(path: Path, block: int = 8 << 20) -> tuple[str, int]:
    """(sha256 hex, bytes read) over the whole file."""
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def read_record(root: Path) -> dict[str, dict]:
    """The download record of a models directory: relative path -> {sha256, size, ...} ({} if none)."""
    path = Path(root) / RECORD_NAME
    if not path.is_file():
        return {}
    try:
        files = json.loads(path.read_text()).get("files", {})
    except (ValueError, AttributeError, OSError) as exc:
        raise ModelError(f"cannot read the download record {path}: {exc} (delete it to check without it)") from None
    return files if isinstance(files, dict) else {}


def write_record(root: Path, files: dict[str, dict]) -> None:
    """Write the download record atomically (temp name, fsync, rename)."""
    path = Path(root) / RECORD_NAME
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump({"format": "virnucpro-models-v1", "files": files}, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _check_pickled(read: Callable[[Path], object], what: str) -> Callable[[Path], None]:
    def check(path: Path) -> None:
        from virnucpro.models.safeload import check_zip_records
        check_zip_records(path, what)
        read(path)
    return check


def _file_checks(ms: ModelSet, chunk_length: int, allow_mismatch: bool) -> list[tuple[Path, Callable[[Path], None]]]:
    """(file, how to load it) for every file of the set, in the order a run needs them."""
    from virnucpro.models import dnabert, esm2
    from virnucpro.models.classifier import load_classifier

    def read_config(path: Path):
        return dnabert.read_config(path)[0]

    weights = ms.dnabert / dnabert.SAFETENSORS_FILE
    if not weights.is_file():
        weights = ms.dnabert / dnabert.TORCH_FILE

    def dna_weights(path: Path) -> None:
        import torch
        if path.name == dnabert.TORCH_FILE:
            from virnucpro.models.safeload import check_zip_records
            check_zip_records(path, "DNABERT weights")
        state = dnabert.read_weights(path)
        try:
            config = read_config(ms.dnabert / dnabert.CONFIG_FILE)
        except ModelError:
            return   # the config's own line says what is wrong with it
        with torch.device("meta"):
            model = dnabert.DnaBert(config)
        dnabert.load_state_dict_checked(model, state, assign=True)   # the weights fit the config

    def classifier(path: Path) -> None:
        if path.suffix != ".safetensors":
            from virnucpro.models.safeload import check_zip_records
            check_zip_records(path, "classifier")
        load_classifier(path, chunk_length, allow_mismatch)

    if ms.esm.is_dir():   # a HuggingFace ESM-2 folder: its weights read and mapped, with its config
        from virnucpro.models.esm2_hf import weights_file
        esm_files = [(weights_file(ms.esm), lambda p: esm2.read_esm2(p.parent, regression=False) and None)]
    else:
        esm_files = [
            (ms.esm, _check_pickled(lambda p: esm2.read_checkpoint(p, mmap=True, regression=False), "ESM-2 checkpoint")),
            (esm2.regression_path(ms.esm), _check_pickled(esm2.read_regression, "ESM-2 contact-regression file"))]
    return [
        *esm_files,
        (ms.dnabert / dnabert.CONFIG_FILE, read_config),
        (ms.dnabert / dnabert.TOKENIZER_FILE, lambda p: dnabert.load_dna_tokenizer(p.parent)),
        (weights, dna_weights),
        (ms.classifier, classifier),
    ]


def check_model_set(ms: ModelSet, chunk_length: int, allow_mismatch: bool = False,
                    report: Callable[[FileCheck], None] | None = None) -> list[FileCheck]:
    """Read and load every file of ``ms``; ``report`` sees each result as it comes. Files that fail
    carry ``problem``; nothing is raised here (``require_sound`` does)."""
    record = read_record(ms.root)
    results = []
    for path, load in _file_checks(ms, chunk_length, allow_mismatch):
        try:
            digest, size = sha256_file(path)
        except OSError as exc:
            fc = FileCheck(path, 0, "", f"cannot read {path}: {exc.strerror or exc}")
        else:
            fc = FileCheck(path, size, digest)
            rec = record.get(_relative(path, ms.root))
            if rec and (rec.get("size") != size or rec.get("sha256") != digest):
                fc.problem = (f"{path} differs from what was downloaded ({size:,} bytes, sha256 {digest[:16]}..., "
                              f"recorded {rec.get('size')} bytes, {str(rec.get('sha256'))[:16]}...): damaged or "
                              "replaced; download it again")
            else:
                fc.recorded = bool(rec)
                try:
                    load(path)
                except ModelError as exc:
                    fc.problem = str(exc)
        results.append(fc)
        if report:
            report(fc)
    return results


def require_sound(results: list[FileCheck]) -> None:
    bad = [fc for fc in results if fc.problem]
    if bad:
        raise ModelError(f"{len(bad)} damaged model file{'s' if len(bad) > 1 else ''}: "
                         + "; ".join(fc.problem for fc in bad))
