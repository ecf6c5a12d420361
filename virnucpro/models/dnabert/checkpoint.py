"""DNABERT-2 / DNABERT-S checkpoints in HF layout: loading one (config.json, model.safetensors or
pytorch_model.bin, tokenizer.json) without remote code, and writing seeded synthetic ones.

Parameter names follow the original checkpoint so its state dict loads as is; a ``bert.`` prefix
(DNABERT-2-117M is saved as ``BertForMaskedLM``) is accepted as well as none (DNABERT-S is saved as
``BertModel``). Pooler and MLM-head weights are not used for embeddings and are ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from tokenizers import Tokenizer

from virnucpro.errors import InputError, ModelError
from virnucpro.models.dnabert.network import INIT_STD, PRESETS, DnaBert, DnaBertConfig
from virnucpro.models.dnabert.tokenizer import TOKENIZER_FILE, load_dna_tokenizer, train_dna_tokenizer
from virnucpro.models.layout import quick_fingerprint
from virnucpro.models.safeload import load_pickled, load_safetensors

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
TORCH_FILE = "pytorch_model.bin"
SYNTHETIC_KEY = "virnucpro_synthetic"


def load_state_dict_checked(model: DnaBert, state: Mapping[str, torch.Tensor], assign: bool = False) -> list[str]:
    """Copy checkpoint tensors into ``model``; return the checkpoint keys that were ignored.

    Keys may carry a ``bert.`` prefix or none. Pooler / MLM-head keys and keys the encoder does not
    have are ignored. ModelError (naming the keys) when an encoder weight is missing or has the
    wrong shape.
    """
    renamed = {key: (key[len("bert.") :] if key.startswith("bert.") else key) for key in state}
    stripped = {renamed[key]: tensor for key, tensor in state.items()}
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in stripped)
    if missing:
        shown = ", ".join(missing[:8]) + (f" ... ({len(missing)} in all)" if len(missing) > 8 else "")
        raise ModelError(f"DNABERT weights lack {len(missing)} expected tensor(s): {shown}")
    wrong = [
        f"{k} (expected {tuple(v.shape)}, file has {tuple(stripped[k].shape)})"
        for k, v in expected.items()
        if tuple(stripped[k].shape) != tuple(v.shape)
    ]
    if wrong:
        shown = "; ".join(wrong[:4]) + (f" ... ({len(wrong)} in all)" if len(wrong) > 4 else "")
        raise ModelError(f"DNABERT weights do not fit config.json: {shown}")
    model.load_state_dict({k: stripped[k] for k in expected}, strict=True, assign=assign)
    return sorted(key for key in state if renamed[key] not in expected)


def read_config(path: Path) -> tuple[DnaBertConfig, dict]:
    """A DNABERT-2/S config.json: the network's config and the raw dict (ModelError naming the file
    when it is unreadable, not a JSON object, or describes another network)."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:   # (UnicodeDecodeError is a ValueError)
        raise ModelError(f"cannot read DNABERT config {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ModelError(f"DNABERT config {path} is not a JSON object")
    try:
        return DnaBertConfig.from_dict(raw), raw
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors or torch state dict (weights-only, virnucpro.models.safeload); ModelError
    when unreadable, damaged or holding anything but tensors."""
    if path.name.endswith(".safetensors"):
        state, _ = load_safetensors(path, what="DNABERT weights")
    else:
        state = load_pickled(path, what="DNABERT weights")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"DNABERT weights {path} are not a plain state dict of tensors")
    return dict(state)


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise ModelError(f"DNABERT {what} not found: {path}")
    return path


def load_dnabert(
    folder: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, use_sdpa: bool = False
) -> tuple[DnaBert, Tokenizer, dict[str, Any]]:
    """Load an HF-layout DNABERT-2/S folder: config.json, model.safetensors or pytorch_model.bin,
    tokenizer.json. Returns (model in eval mode, tokenizer, info).

    info: folder, weights_file, weights_format, fingerprint (sha256 prefix of the weights file),
    synthetic (config.json's "virnucpro_synthetic" dict, or None), config (dict), n_parameters,
    ignored_keys.
    """
    root = _require(Path(folder), "model folder")
    if not root.is_dir():
        raise ModelError(f"DNABERT model folder is not a directory: {root}")
    config, raw_config = read_config(_require(root / CONFIG_FILE, "config file"))

    weights_path = root / SAFETENSORS_FILE
    if not weights_path.exists():
        weights_path = root / TORCH_FILE
    if not weights_path.exists():
        raise ModelError(f"DNABERT weights not found: {root / SAFETENSORS_FILE} (or {root / TORCH_FILE})")
    tokenizer = load_dna_tokenizer(root)

    with torch.device("meta"):   # no random initialisation (a second on a slow CPU): the file's tensors are used
        model = DnaBert(config, use_sdpa=use_sdpa)
    ignored = load_state_dict_checked(model, read_weights(weights_path), assign=True)
    model = model.to(device=device, dtype=dtype).eval()
    synthetic = raw_config.get(SYNTHETIC_KEY)
    info = {
        "folder": str(root),
        "weights_file": str(weights_path),
        "weights_format": "safetensors" if weights_path.name == SAFETENSORS_FILE else "bin",
        "fingerprint": quick_fingerprint(weights_path),
        "synthetic": synthetic if isinstance(synthetic, dict) else None,
        "config": config.to_dict(),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "ignored_keys": ignored,
    }
    return model, tokenizer, info


def _random_state_dict(config: DnaBertConfig, seed: int) -> dict[str, torch.Tensor]:
    """Seeded weights in checkpoint key order: LayerNorm weight 1 / bias 0, every other tensor
    (weights and biases) N(0, 0.02). Includes the pooler (DNABERT-S checkpoints carry one)."""
    generator = torch.Generator().manual_seed(seed)
    template = DnaBert(config).state_dict()
    h = config.hidden_size
    template["pooler.dense.weight"] = torch.empty(h, h)
    template["pooler.dense.bias"] = torch.empty(h)
    state: dict[str, torch.Tensor] = {}
    for name, tensor in template.items():
        if "LayerNorm" in name or "layernorm" in name:
            state[name] = torch.ones(tensor.shape) if name.endswith("weight") else torch.zeros(tensor.shape)
        else:
            state[name] = torch.randn(tensor.shape, generator=generator) * INIT_STD
    return state


def write_synthetic_dnabert(
    out_dir: str | Path,
    preset: str,
    seed: int,
    training_dna: Iterable[str],
    weights_format: str = "safetensors",
) -> Path:
    """Write a random-weight DNABERT-S look-alike in HF layout; returns the folder.

    config.json: DNABERT-2-117M hyper-parameters ("full") or a small "tiny" net, both with the
    4096-token vocabulary, plus "virnucpro_synthetic": {preset, seed, note}. Weights use DNABERT-S's
    key names (a ``BertModel`` save: no ``bert.`` prefix, pooler included), as model.safetensors
    ("safetensors") or pytorch_model.bin ("bin"). tokenizer.json: BPE trained on ``training_dna``.
    Same seed and DNA give byte-identical weights.
    """
    if preset not in PRESETS:
        raise InputError(f"unknown DNABERT preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if weights_format not in ("safetensors", "bin"):
        raise InputError(f"unknown weights format {weights_format!r}; choose safetensors or bin")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    config = DnaBertConfig(**PRESETS[preset])
    config_dict = config.to_dict()
    config_dict[SYNTHETIC_KEY] = {"preset": preset, "seed": seed, "note": "random weights - not biology"}
    (out / CONFIG_FILE).write_text(json.dumps(config_dict, indent=2) + "\n")

    state = _random_state_dict(config, seed)
    for stale in (SAFETENSORS_FILE, TORCH_FILE):  # never leave two weight files behind
        (out / stale).unlink(missing_ok=True)
    if weights_format == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(out / SAFETENSORS_FILE), metadata={"format": "pt"})
    else:
        torch.save(state, str(out / TORCH_FILE))

    train_dna_tokenizer(training_dna, seed).save(str(out / TOKENIZER_FILE))
    return out


