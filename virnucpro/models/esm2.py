"""The reference ESM-2: fair-esm's own model from a fair-esm checkpoint, the original's embedding,
synthetic checkpoints.

What it reproduces: fair-esm's arithmetic. The model is fair-esm's ``ESM2`` module itself, loaded
by fair-esm's loader and run in fp32 (its attention, GELU, rotary embedding and LayerNorms, padded
batches), so the reference engine's ESM-2 embeddings are those of the original VirNucPro.
``esm2_fast`` re-implements the network for the fast engine (packed sequences, half precision,
fused kernels) and is tested against this module.

The checkpoint format is fair-esm's: ``{"model": state dict with "encoder.sentence_encoder." /
"encoder." prefixes, "cfg": {"model": argparse.Namespace(encoder_layers, encoder_embed_dim,
encoder_attention_heads, token_dropout)}}`` plus ``<name>-contact-regression.pt`` beside it.
A HuggingFace ESM-2 folder (``facebook/esm2_*``: config.json, model.safetensors or
pytorch_model.bin) is read into the same layout by ``virnucpro.models.esm2_hf``; ``read_esm2`` takes
either. Both files are read by our weights-only loader (``virnucpro.models.safeload``; fair-esm's own loader
calls ``torch.load`` without ``weights_only``, which ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns into
plain unpickling) with ``argparse.Namespace`` allowed for fair-esm's arguments and nothing else; the
model is then built by fair-esm's ``load_model_and_alphabet_core`` from what was read.

Reference embedding (the original's extract_esm): sequences sorted by length into batches of at
most ``toks_per_batch`` = 2048 tokens counting (longest + 1) x sequences (fair-esm's
``get_batch_indices``), ``<cls>``/``<eos>`` added, ``<pad>`` padding, fp32; embedding = layer-L
representation (after the final LayerNorm) averaged over residue positions 1..min(1024, len).
Proteins here are at most C/3 residues (<= 166), so that truncation never bites.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from virnucpro.errors import ModelError
from virnucpro.models import esm2_hf
from virnucpro.models.layout import atomic_torch_save
from virnucpro.models.safeload import load_pickled

TRUNCATION = 1024

# name -> (file name, layers, embed dim, heads)
PRESETS = {
    "full": ("esm2_t36_3B_UR50D", 36, 2560, 40),
    "tiny": ("esm2_t2_tiny_synthetic", 2, 64, 4),
}
# the same architectures with outlier channels and heavy-tailed weight rows planted (esm2_outliers.py)
OUTLIER_PRESETS = {"full-outliers": "full", "tiny-outliers": "tiny"}
ESM_GLOBALS = [argparse.Namespace]     # fair-esm pickles its arguments as a Namespace; nothing else


def regression_path(path: str | Path) -> Path:
    """The contact-regression file fair-esm wants beside a checkpoint."""
    path = Path(path)
    return path.with_name(path.stem + "-contact-regression.pt")


def read_checkpoint(path: str | Path, mmap: bool = False, regression: bool = True) -> tuple[dict, dict | None]:
    """(checkpoint, contact-regression data) of a fair-esm ESM-2 file, both read weights-only
    (``mmap``: the checkpoint's tensors map the file). ModelError names a file that is missing,
    damaged, refused, or not in fair-esm's layout."""
    data = load_pickled(path, ESM_GLOBALS, what="ESM-2 checkpoint", mmap=mmap)
    cfg = data.get("cfg") if isinstance(data, dict) else None
    cfg = cfg.get("model") if isinstance(cfg, dict) else None
    if (not isinstance(data, dict) or not isinstance(data.get("model"), dict)
            or not all(hasattr(cfg, a) for a in ("encoder_layers", "encoder_embed_dim", "encoder_attention_heads"))):
        raise ModelError(f"{path} is not a fair-esm ESM-2 checkpoint (no 'model' state dict and 'cfg' "
                         "model arguments); is it a complete fair-esm .pt file?")
    return data, read_regression(regression_path(path)) if regression else None


def read_esm2(path: str | Path, mmap: bool = False, regression: bool = True) -> tuple[dict, dict | None]:
    """``read_checkpoint`` for a fair-esm ``.pt`` file, ``esm2_hf.read_hf_esm2`` for a HuggingFace
    folder: (fair-esm checkpoint, contact regression or None). Any ESM-2 size; ModelError otherwise.
    ESM-2's token dropout (the 0.88 embedding scale) is part of every ESM-2 and of both engines'
    arithmetic: a checkpoint without it is refused."""
    if Path(path).is_dir():
        data, reg = esm2_hf.read_hf_esm2(path, mmap=mmap, regression=regression)
    else:
        data, reg = read_checkpoint(path, mmap=mmap, regression=regression)
    if not getattr(data["cfg"]["model"], "token_dropout", True):
        raise ModelError(f"{path}: an ESM-2 without token dropout (token_dropout=False) is not one the fast "
                         "engine computes")
    return data, reg


def read_regression(path: str | Path) -> dict:
    """A fair-esm contact-regression file, read weights-only; ModelError names it when it is not one."""
    reg = load_pickled(path, ESM_GLOBALS, what="ESM-2 contact-regression file")
    if not isinstance(reg, dict) or not isinstance(reg.get("model"), dict):
        raise ModelError(f"{path} is not a fair-esm contact-regression file (no 'model' state dict)")
    return reg


def load_esm2(path: str | Path, device: str | torch.device = "cpu"):
    """Load an ESM-2 (fp32, eval) into fair-esm's ``ESM2`` module, any size: a fair-esm checkpoint
    file or a HuggingFace folder. Returns (model, alphabet, info)."""
    import esm

    path = Path(path)
    folder = path.is_dir()
    if not folder and not path.is_file():
        raise ModelError(f"ESM-2 checkpoint not found: {path}")
    if not folder and not path.stem.startswith("esm2"):
        raise ModelError(f"{path.name}: fair-esm recognises ESM-2 checkpoints by an 'esm2' file-name prefix")
    data, reg = read_esm2(path)
    try:   # the name only picks fair-esm's ESM-2 builder (it must start with "esm2")
        model, alphabet = esm.pretrained.load_model_and_alphabet_core("esm2_hf" if folder else path.stem, data, reg)
    except Exception as exc:
        raise ModelError(f"cannot load ESM-2 checkpoint {path}: {type(exc).__name__}: {exc}") from None
    synthetic = None if folder else _read_synthetic_marker(path)
    model = model.eval().to(device)
    info = {"path": str(path), "format": "huggingface" if folder else "fair-esm", "layers": model.num_layers,
            "embed_dim": model.embed_dim, "heads": model.attention_heads, "synthetic": synthetic}
    return model, alphabet, info


def _read_synthetic_marker(path: Path) -> dict | None:
    marker = path.with_name(path.stem + ".synthetic.json")
    if marker.is_file():
        import json
        return json.loads(marker.read_text())
    return None


def batch_indices(lengths: Sequence[int], toks_per_batch: int = 2048, extra_toks_per_seq: int = 1) -> list[list[int]]:
    """fair-esm's FastaBatchedDataset.get_batch_indices: length-sorted, (max+1)*n <= budget."""
    sizes = sorted((n, i) for i, n in enumerate(lengths))
    batches: list[list[int]] = []
    buf: list[int] = []
    max_len = 0
    for sz, i in sizes:
        sz += extra_toks_per_seq
        if max(sz, max_len) * (len(buf) + 1) > toks_per_batch and buf:
            batches.append(buf)
            buf, max_len = [], 0
        max_len = max(max_len, sz)
        buf.append(i)
    if buf:
        batches.append(buf)
    return batches


@torch.no_grad()
def embed_reference(model, alphabet, proteins: Sequence[str], device: str | torch.device = "cpu",
                    toks_per_batch: int = 2048, on_done: Callable[[int], None] | None = None) -> np.ndarray:
    """Mean layer-L representation per protein, [N, embed_dim] float32, as the original computes it."""
    converter = alphabet.get_batch_converter(TRUNCATION)
    layer = model.num_layers
    out = np.zeros((len(proteins), model.embed_dim), dtype=np.float32)
    for idx in batch_indices([len(p) for p in proteins], toks_per_batch):
        _, strs, toks = converter([(str(i), proteins[i]) for i in idx])
        rep = model(toks.to(device), repr_layers=[layer], return_contacts=False)["representations"][layer]
        rep = rep.float().cpu()
        for row, i in enumerate(idx):
            n = min(TRUNCATION, len(strs[row]))
            out[i] = rep[row, 1:n + 1].mean(0).numpy()
        if on_done:
            on_done(len(idx))
    return out


def _state_shapes(layers: int, dim: int, heads: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Parameter names/shapes of fair-esm's ESM2 for this size (built on the meta device)."""
    import esm
    from esm.model.esm2 import ESM2

    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    with torch.device("meta"):
        m = ESM2(num_layers=layers, embed_dim=dim, attention_heads=heads, alphabet=alphabet, token_dropout=True)
    return {k: (tuple(v.shape), v.dtype) for k, v in m.state_dict().items()}


def write_synthetic_esm2(out_dir: str | Path, preset: str, seed: int, synthetic: dict,
                         dtype: torch.dtype = torch.float16) -> Path:
    """Write a seeded random-weight ESM-2 checkpoint in fair-esm's format (+ contact regression).

    Weights ~ N(0, 0.02), biases 0, LayerNorm 1/0, rotary ``inv_freq`` exact. Random numbers come
    from a CPU generator per tensor (seed, tensor index), so a preset+seed gives the same bytes on
    every machine. ``full`` is the real esm2_t36_3B_UR50D architecture (~2.8 G parameters, stored
    as fp16 like the published file, ~5.7 GB). ``full-outliers`` / ``tiny-outliers``: the same, with
    massive residual channels and heavy-tailed weight rows planted (``esm2_outliers``; what was
    planted is recorded in the file's marker)."""
    base = OUTLIER_PRESETS.get(preset, preset)
    name, layers, dim, heads = PRESETS[base]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shapes = _state_shapes(layers, dim, heads)
    model_sd: dict[str, torch.Tensor] = {}
    regression: dict[str, torch.Tensor] = {}
    head_dim = dim // heads

    def make(ti: int, key: str, shape: tuple) -> torch.Tensor:
        if key.endswith("rot_emb.inv_freq"):
            return 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        if "layer_norm" in key or "layernorm" in key:
            return (torch.ones(shape) if key.endswith("weight") else torch.zeros(shape)).to(dtype)
        if key.endswith("bias"):
            return torch.zeros(shape, dtype=dtype)
        g = torch.Generator().manual_seed(seed * 1_000_003 + ti)   # one stream per tensor
        return torch.empty(shape).normal_(0.0, 0.02, generator=g).to(dtype)

    items = sorted(shapes.items())
    jobs = [(ti, key, shape) for ti, (key, (shape, _)) in enumerate(items)]
    if base == "full":  # 2.8 G values: tensors are independent, fill them on all cores
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
            tensors = list(pool.map(lambda j: make(*j), jobs))
    else:  # (threads would leave OpenMP pools spinning and slow the small CPU work that follows)
        tensors = [make(*j) for j in jobs]
    if preset in OUTLIER_PRESETS:
        from virnucpro.models.esm2_outliers import OutlierSpec, plant
        planted = plant(dict(zip((k for k, _ in items), tensors)), layers, OutlierSpec(), seed)   # in place
        synthetic = {**synthetic, "outliers": planted}
    for (key, _), t in zip(items, tensors):
        if key.startswith("contact_head."):
            regression[key] = t
        elif key.startswith("lm_head"):
            model_sd["encoder." + key] = t
        else:
            model_sd["encoder.sentence_encoder." + key] = t
    # fair-esm ties lm_head.weight to embed_tokens.weight: the checkpoint holds one value twice.
    model_sd["encoder.lm_head.weight"] = model_sd["encoder.sentence_encoder.embed_tokens.weight"]
    cfg = argparse.Namespace(encoder_layers=layers, encoder_embed_dim=dim, encoder_attention_heads=heads,
                             token_dropout=True)
    ckpt = out_dir / f"{name}.pt"
    atomic_torch_save({"model": model_sd, "cfg": {"model": cfg}, "virnucpro_synthetic": synthetic}, ckpt)
    atomic_torch_save({"model": regression}, out_dir / f"{name}-contact-regression.pt")
    import json
    (out_dir / f"{name}.synthetic.json").write_text(json.dumps(synthetic, indent=2) + "\n")
    return ckpt
