"""The VirNucPro classifier: Linear(3328, 512) -> BatchNorm1d(512) -> ReLU -> Dropout(0.5) -> Linear(512, 2).

The published weights (``300_model.pth`` / ``500_model.pth``) are whole pickled modules of class
``__main__.MLPClassifier`` with children ``hidden_layer``, ``bn1``, ``dropout``, ``output_layer``.
Unpickling such a file the plain way runs whatever code it names. We never do that: the file goes
through torch's weights-only unpickler (``virnucpro.models.safeload``: whatever the environment
says) with an allow-list of exactly the classes that layout needs (the classifier, Linear, BatchNorm1d, Dropout, ReLU, tensors); ``__main__.MLPClassifier`` is bound
to an inert stand-in class here. Anything else in the file is refused with ``ModelError`` before
any of it runs. Safetensors files (``{C}_model.safetensors``, metadata ``chunk_length``) load too.

Input width = DNABERT-S hidden + ESM-2 hidden (768 + 2560 = 3328 for the real models; smaller for a
tiny synthetic set), read from the weights. Scores are softmax(logits): score1 = P(others), score2 = P(virus); label = argmax, a tie -> others.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from virnucpro.core.files import atomic_path
from virnucpro.errors import ModelError
from virnucpro.io.outputs import LABELS
from virnucpro.models.layout import atomic_torch_save, quick_fingerprint
from virnucpro.models.safeload import load_pickled, load_safetensors

INPUT_DIM = 768 + 2560
HIDDEN_DIM = 512


class MLPClassifier(nn.Module):
    """Same children and names as the original module, so its state dict maps one to one."""

    def __init__(self, input_dim: int = INPUT_DIM, hidden_dim: int = HIDDEN_DIM, num_class: int = 2):
        super().__init__()
        self.hidden_layer = nn.Linear(input_dim, hidden_dim)
        self.bn1 = nn.BatchNorm1d(hidden_dim)
        self.output_layer = nn.Linear(hidden_dim, num_class)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, 3328] -> logits [B, 2]
        x = torch.relu(self.bn1(self.hidden_layer(x)))
        return self.output_layer(self.dropout(x))


class _PickledMLPClassifier(nn.Module):
    """Inert stand-in bound to ``__main__.MLPClassifier`` while unpickling: it only receives
    attributes (torch's weights-only unpickler sets ``__dict__``); it has no code of its own."""


_ALLOWED_GLOBALS = [
    (_PickledMLPClassifier, "__main__.MLPClassifier"),
    nn.Linear, nn.BatchNorm1d, nn.Dropout, nn.ReLU,
]


def chunk_length_from_name(path: Path) -> int | None:
    m = re.match(r"^(\d+)_model\b", path.name)
    return int(m.group(1)) if m else None


def _load_pickled_state(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    obj = load_pickled(path, _ALLOWED_GLOBALS, what="classifier")
    synthetic = None
    if isinstance(obj, nn.Module):
        synthetic = obj.__dict__.get("virnucpro_synthetic")
        try:
            state = {k: v for k, v in obj.state_dict().items()}
        except Exception as exc:
            raise ModelError(f"classifier {path} is not a VirNucPro MLPClassifier: {exc}") from None
    elif isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj  # a plain state dict is fine too
    else:
        raise ModelError(f"classifier {path} holds a {type(obj).__name__}, not an MLPClassifier")
    return state, synthetic


def _load_safetensors_state(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    return load_safetensors(path, what="classifier")


def load_classifier(path: str | Path, chunk_length: int | None = None, allow_mismatch: bool = False):
    """Load a classifier safely. Returns (model in eval mode, info dict).

    ``chunk_length``: the run's chunk length; a classifier made for another one (by its file name
    ``{C}_model.*`` or safetensors metadata) is refused unless ``allow_mismatch``."""
    import json
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"classifier file not found: {path}")
    synthetic = None
    file_chunk = chunk_length_from_name(path)
    if path.suffix == ".safetensors":
        state, meta = _load_safetensors_state(path)
        if "chunk_length" in meta:
            file_chunk = int(meta["chunk_length"])
        if "virnucpro_synthetic" in meta:
            synthetic = json.loads(meta["virnucpro_synthetic"])
    else:
        state, synthetic = _load_pickled_state(path)
    if chunk_length is not None and file_chunk is not None and file_chunk != chunk_length:
        msg = (f"classifier {path.name} was trained for {file_chunk}-nt chunks but this run uses "
               f"--chunk-length {chunk_length}: labels would be wrong")
        if not allow_mismatch:
            raise ModelError(msg + " (use the matching classifier, or --allow-classifier-mismatch)")
        import logging
        logging.getLogger(__name__).warning("!!! %s !!!", msg)
    w = state.get("hidden_layer.weight")
    if w is None or w.dim() != 2:
        raise ModelError(f"classifier {path} does not have the VirNucPro layout: no 2-D hidden_layer.weight")
    model = MLPClassifier(input_dim=w.shape[1], hidden_dim=w.shape[0])  # 3328 -> 512 for the published ones
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ModelError(f"classifier {path} does not have the VirNucPro layout: "
                         f"missing {missing[:4]}, unexpected {unexpected[:4]}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ModelError(f"classifier {path}: {k} has shape {tuple(state[k].shape)}, "
                             f"expected {tuple(v.shape)}")
    model.load_state_dict({k: state[k].float() if state[k].is_floating_point() else state[k]
                           for k in expected})
    model.eval()
    info = {"path": str(path), "fingerprint": quick_fingerprint(path), "chunk_length": file_chunk,
            "synthetic": synthetic, "input_dim": int(w.shape[1])}
    return model, info


def save_classifier_pickle(model: MLPClassifier, path: str | Path, synthetic: dict | None = None) -> None:
    """Write ``model`` in the ORIGINAL layout: ``torch.save`` of a whole module whose class is
    ``__main__.MLPClassifier`` (how the published 300_model.pth / 500_model.pth were made)."""
    import sys
    main = sys.modules["__main__"]
    cls = type("MLPClassifier", (nn.Module,), {"forward": MLPClassifier.forward, "__module__": "__main__"})
    obj = cls.__new__(cls)
    obj.__dict__.update(model.__dict__)
    if synthetic is not None:
        obj.virnucpro_synthetic = synthetic
    had = hasattr(main, "MLPClassifier")
    old = getattr(main, "MLPClassifier", None)
    main.MLPClassifier = cls
    try:
        atomic_torch_save(obj, Path(path))
    finally:
        if had:
            main.MLPClassifier = old
        else:
            del main.MLPClassifier


def save_classifier_safetensors(model: MLPClassifier, path: str | Path, chunk_length: int,
                                synthetic: dict | None = None) -> None:
    import json
    from safetensors.torch import save_file
    meta = {"chunk_length": str(chunk_length), "format": "virnucpro-mlp-v1"}
    if synthetic is not None:
        meta["virnucpro_synthetic"] = json.dumps(synthetic)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata=meta)


@torch.no_grad()
def classify(model: MLPClassifier, features: np.ndarray | torch.Tensor, device: str | torch.device = "cpu",
             batch_size: int = 65536) -> np.ndarray:
    """Softmax scores [N, 2] float32 (score1 = others, score2 = virus) for features [N, 3328]."""
    model = model.to(device)
    feats = torch.as_tensor(features)
    out = []
    for i in range(0, feats.shape[0], batch_size):
        x = feats[i:i + batch_size].to(device=device, dtype=torch.float32)
        out.append(torch.softmax(model(x), dim=1).cpu())
    if not out:
        return np.zeros((0, 2), dtype=np.float32)
    return torch.cat(out).numpy().astype(np.float32)


def labels_from_scores(scores: np.ndarray) -> list[str]:
    """argmax with ties -> index 0 ('others'), as torch.max gives."""
    return [LABELS[int(s2 > s1)] for s1, s2 in scores.tolist()]
