"""Where the models live: one directory, real published formats, no network.

    MODELS_DIR/
      esm2_t36_3B_UR50D.pt                      fair-esm checkpoint (as torch hub caches it)
      esm2_t36_3B_UR50D-contact-regression.pt   its contact-regression weights (fair-esm wants them)
      (or esm2_*/                               a HuggingFace ESM-2 folder, any size: config.json,
                                                model.safetensors or pytorch_model.bin, vocab.txt)
      DNABERT-S/                                HuggingFace folder: config.json,
                                                model.safetensors or pytorch_model.bin, tokenizer.json
      300_model.pth   500_model.pth             the original classifiers (or {C}_model.safetensors)
      SYNTHETIC.json                            present only in sets written by `models synth`

The directory is ``--models DIR``, else ``$VIRNUCPRO_MODELS``, else ``~/.cache/virnucpro/models``.
A torch-hub cache (``hub/checkpoints/esm2_*.pt``) and a HuggingFace cache
(``models--zhihan1996--DNABERT-S/snapshots/*/``, ``models--facebook--esm2_*/snapshots/*/``) inside
that directory are found too (a fair-esm ``.pt`` before an ESM-2 folder), and
``--esm``, ``--dnabert``, ``--classifier`` override single files. Nothing here reaches the network:
``virnucpro models download`` (download.py) fills such a directory and records each file's sha256
in ``virnucpro-models.json``, which ``virnucpro models check`` (verify.py) compares.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from virnucpro.core.files import atomic_path
from virnucpro.errors import ModelError

ENV_VAR = "VIRNUCPRO_MODELS"
DEFAULT_DIR = Path.home() / ".cache" / "virnucpro" / "models"
ESM_DEFAULT_NAME = "esm2_t36_3B_UR50D.pt"
DNABERT_DIRNAME = "DNABERT-S"


def models_dir(cli_value: str | Path | None) -> Path:
    if cli_value:
        return Path(cli_value).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return DEFAULT_DIR


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save to a temp name beside ``path``, then rename: a checkpoint is whole or absent. To a
    path, not a handle: torch.save names the archive inside after the file (a handle gives
    ``archive/``), and the files of a synthetic model set must stay byte-identical."""
    import torch
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def quick_fingerprint(path: Path, n_hex: int = 16) -> str:
    """Content fingerprint that stays fast on multi-GB checkpoints: sha256 over the file size and
    its first and last 4 MiB (whole file when smaller than 8 MiB); for safetensors also over the
    header in canonical key order, whose metadata order the library does not keep stable."""
    from virnucpro.models.safeload import safetensors_header
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        start = 0
        if path.suffix == ".safetensors":  # header JSON in canonical order (safetensors shuffles metadata)
            header = safetensors_header(path)   # checked first: garbage is a ModelError naming the file
            h.update(json.dumps(header, sort_keys=True).encode())
            start = 8 + int.from_bytes(fh.read(8), "little")
        body = size - start
        fh.seek(start)
        if body <= 8 << 20:
            h.update(fh.read())
        else:
            h.update(fh.read(4 << 20))
            fh.seek(size - (4 << 20))
            h.update(fh.read())
    return h.hexdigest()[:n_hex]


@dataclass
class ModelSet:
    root: Path
    esm: Path
    dnabert: Path
    classifier: Path
    chunk_length: int
    synthetic: dict | None = None          # SYNTHETIC.json content, if any
    fingerprints: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {"root": str(self.root), "esm": str(self.esm), "dnabert": str(self.dnabert),
                "classifier": str(self.classifier), "synthetic": self.synthetic is not None,
                "fingerprints": self.fingerprints}


def _find_esm(root: Path) -> Path | None:
    for d in (root, root / "hub" / "checkpoints", root / "checkpoints"):
        if (d / ESM_DEFAULT_NAME).is_file():
            return d / ESM_DEFAULT_NAME
        cands = sorted(p for p in d.glob("esm2_*.pt") if not p.name.endswith("-contact-regression.pt")) \
            if d.is_dir() else []
        if len(cands) == 1:
            return cands[0]
        if len(cands) > 1:
            raise ModelError(f"several ESM-2 checkpoints in {d} ({', '.join(p.name for p in cands)}); "
                             "choose one with --esm PATH")
    return _find_esm_folder(root)


def _find_esm_folder(root: Path) -> Path | None:
    """A HuggingFace ESM-2 folder: ``root/esm2_*/``, or the newest snapshot of a HuggingFace cache's
    ``models--facebook--esm2_*`` (one model; several are ambiguous)."""
    from virnucpro.models.esm2_hf import is_hf_esm2
    found: dict[str, Path] = {}
    for d in sorted(p for p in root.glob("esm2_*") if p.is_dir() and is_hf_esm2(p)):
        found[d.name] = d
    for cfg in sorted(root.glob("**/models--facebook--esm2_*/snapshots/*/config.json"), key=lambda p: p.stat().st_mtime):
        if is_hf_esm2(cfg.parent):
            found[cfg.parents[2].name.removeprefix("models--facebook--")] = cfg.parent   # the newest snapshot wins
    if len(found) > 1:
        raise ModelError(f"several ESM-2 folders in {root} ({', '.join(sorted(found))}); choose one with --esm PATH")
    return next(iter(found.values()), None)


def esm_weights_path(esm: Path) -> Path:
    """The file holding an ESM-2's weights: the checkpoint itself, or a HuggingFace folder's
    model.safetensors / pytorch_model.bin (ModelError if it has neither)."""
    if Path(esm).is_dir():
        from virnucpro.models.esm2_hf import weights_file
        return weights_file(esm)
    return Path(esm)


def _find_dnabert(root: Path) -> Path | None:
    if (root / DNABERT_DIRNAME / "config.json").is_file():
        return root / DNABERT_DIRNAME
    snaps = sorted(root.glob("**/models--zhihan1996--DNABERT-S/snapshots/*/config.json"))
    return snaps[-1].parent if snaps else None


def _find_classifier(root: Path, chunk_length: int) -> Path | None:
    for suffix in (".pth", ".safetensors"):
        p = root / f"{chunk_length}_model{suffix}"
        if p.is_file():
            return p
    return None


def find_classifier(models: str | Path | None, chunk_length: int) -> Path:
    """The model directory's classifier for ``chunk_length`` (``virnucpro classify``); ModelError if none."""
    root = models_dir(models)
    found = _find_classifier(root, chunk_length) if root.is_dir() else None
    if found is None:
        raise ModelError(f"classifier not found: {root / f'{chunk_length}_model.pth'} (give --classifier PTH "
                         "or --models DIR)")
    return found


def resolve(models: str | Path | None, chunk_length: int, esm: str | Path | None = None,
            dnabert: str | Path | None = None, classifier: str | Path | None = None,
            fingerprint: bool = True) -> ModelSet:
    """Find the three models; a clear ModelError names whatever is missing."""
    root = models_dir(models)
    if not (esm and dnabert and classifier) and not root.is_dir():
        raise ModelError(
            f"model directory not found: {root} (give --models DIR or set ${ENV_VAR}; "
            "for a synthetic test set run `virnucpro models synth --preset tiny -o DIR`)")
    esm_p = Path(esm) if esm else _find_esm(root)
    if esm_p is not None and esm_p.is_dir():   # a HuggingFace folder: its config and weights
        from virnucpro.models.esm2_hf import is_hf_esm2
        if not is_hf_esm2(esm_p):
            raise ModelError(f"{esm_p} is not a HuggingFace ESM-2 folder (no config.json with model_type 'esm')")
        esm_weights_path(esm_p)
    elif esm_p is None or not esm_p.is_file():
        raise ModelError(f"ESM-2 checkpoint not found: {esm_p or root / ESM_DEFAULT_NAME}")
    else:
        reg = esm_p.with_name(esm_p.stem + "-contact-regression.pt")
        if not reg.is_file():
            raise ModelError(f"ESM-2 contact-regression file not found: {reg} (fair-esm needs it beside "
                             f"{esm_p.name})")
    dn_p = Path(dnabert) if dnabert else _find_dnabert(root)
    if dn_p is None or not dn_p.is_dir():
        raise ModelError(f"DNABERT-S folder not found: {dn_p or root / DNABERT_DIRNAME}")
    for name in ("config.json", "tokenizer.json"):
        if not (dn_p / name).is_file():
            raise ModelError(f"DNABERT-S file not found: {dn_p / name}")
    if not ((dn_p / "model.safetensors").is_file() or (dn_p / "pytorch_model.bin").is_file()):
        raise ModelError(f"DNABERT-S weights not found: {dn_p / 'model.safetensors'} "
                         "(or pytorch_model.bin)")
    cl_p = Path(classifier) if classifier else _find_classifier(root, chunk_length)
    if cl_p is None or not cl_p.is_file():
        raise ModelError(f"classifier not found: {cl_p or root / f'{chunk_length}_model.pth'} "
                         f"(the classifier must match --chunk-length {chunk_length})")
    synthetic = None
    marker = root / "SYNTHETIC.json"
    if marker.is_file():
        synthetic = json.loads(marker.read_text())
    ms = ModelSet(root, esm_p, dn_p, cl_p, chunk_length, synthetic)
    if fingerprint:
        ms.fingerprints = fingerprints(ms)
    return ms


def fingerprints(ms: ModelSet) -> dict[str, str]:
    """Quick fingerprints of the three models' weight files (what a run's manifest records)."""
    dn_w = ms.dnabert / "model.safetensors"
    if not dn_w.is_file():
        dn_w = ms.dnabert / "pytorch_model.bin"
    return {"esm": quick_fingerprint(esm_weights_path(ms.esm)), "dnabert": quick_fingerprint(dn_w),
            "classifier": quick_fingerprint(ms.classifier)}
