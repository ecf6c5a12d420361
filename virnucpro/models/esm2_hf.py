"""ESM-2 from a HuggingFace folder (the ``facebook/esm2_*`` layout), read into fair-esm's layout.

    FOLDER/
      config.json                    model_type "esm": num_hidden_layers, hidden_size, num_attention_heads,
                                     intermediate_size (4 x hidden), rotary positions, token_dropout
      model.safetensors              or pytorch_model.bin (read weights-only: virnucpro.models.safeload)
      vocab.txt                      optional; when present it must be fair-esm's alphabet, in its order

Many users have ``facebook/esm2_*`` cached this way, and fine-tuned ESM-2s are published this way
(an ``EsmForSequenceClassification`` or ``EsmForMaskedLM``). Both engines read such a folder through
``read_hf_esm2``, which returns what ``esm2.read_checkpoint`` returns for a fair-esm ``.pt``: the
fair-esm state dict (``embed_tokens``, ``layers.i.self_attn.q_proj`` ...) with its ``cfg`` namespace,
and the contact-regression weights. The names map one to one (HF name -> fair-esm name):

    [esm.]embeddings.word_embeddings                 embed_tokens
    [esm.]encoder.layer.i.attention.self.query|key|value     layers.i.self_attn.q_proj|k_proj|v_proj
    [esm.]encoder.layer.i.attention.self.rotary_embeddings.inv_freq   layers.i.self_attn.rot_emb.inv_freq
    [esm.]encoder.layer.i.attention.output.dense     layers.i.self_attn.out_proj
    [esm.]encoder.layer.i.attention.LayerNorm        layers.i.self_attn_layer_norm   (pre-LN, as fair-esm)
    [esm.]encoder.layer.i.intermediate.dense         layers.i.fc1
    [esm.]encoder.layer.i.output.dense               layers.i.fc2
    [esm.]encoder.layer.i.LayerNorm                  layers.i.final_layer_norm
    [esm.]encoder.emb_layer_norm_after               emb_layer_norm_after   (the final LayerNorm)
    [esm.]contact_head.regression                    contact_head.regression
    lm_head.dense|layer_norm|decoder.weight|bias     lm_head.dense|layer_norm|weight|bias   (EsmForMaskedLM)

transformers 5 writes the same layout with two legacy spellings, read too: ``LayerNorm.gamma`` /
``LayerNorm.beta`` for ``.weight`` / ``.bias``, and one ``encoder.layer.*.attention.self.
rotary_embeddings.inv_freq`` for every layer. Dropped: ``embeddings.position_ids`` and the unused ``embeddings.position_embeddings`` (transformers
< 4.30 saved one even for rotary models), ``pooler.*`` (EsmModel) and ``classifier.*`` (the
fine-tuning head). A folder without an LM head (EsmModel, EsmForSequenceClassification) gets a
stand-in (zero dense layer, the embedding matrix as decoder): fair-esm's module wants one, and
nothing here uses its logits. A missing ``inv_freq`` (newer transformers do not save it) is fair-esm's
formula. The token order: HF's ``vocab.txt`` for ESM-2 is fair-esm's ESM-1b alphabet (<cls> <pad>
<eos> <unk> L A G V S E R T I D P K Q N F Y M H W C X B U Z O . - <null_1> <mask>); it is checked
token by token, and a folder with another order is refused rather than silently permuted.

Anything else is refused with a ModelError naming the folder: ESM-1 style absolute positions, an
embedding LayerNorm, another GELU or LayerNorm epsilon, an unknown weight name, a missing one.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from virnucpro.errors import ModelError
from virnucpro.models.safeload import load_pickled, load_safetensors

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# fair-esm's Alphabet.from_architecture("ESM-1b").all_toks (checked against fair-esm in the tests)
ESM_VOCAB = ("<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO.-", "<null_1>", "<mask>")

_LAYER = re.compile(r"^encoder\.layer\.(\d+|\*)\.(.+)$")   # "*": one tensor for every layer (transformers 5)
_LAYER_NAMES = {   # inside encoder.layer.i. -> inside layers.i.
    "attention.self.query": "self_attn.q_proj",
    "attention.self.key": "self_attn.k_proj",
    "attention.self.value": "self_attn.v_proj",
    "attention.output.dense": "self_attn.out_proj",
    "attention.LayerNorm": "self_attn_layer_norm",
    "intermediate.dense": "fc1",
    "output.dense": "fc2",
    "LayerNorm": "final_layer_norm",
}
_TOP_NAMES = {
    "embeddings.word_embeddings.weight": "embed_tokens.weight",
    "encoder.emb_layer_norm_after.weight": "emb_layer_norm_after.weight",
    "encoder.emb_layer_norm_after.bias": "emb_layer_norm_after.bias",
    "lm_head.dense.weight": "lm_head.dense.weight",
    "lm_head.dense.bias": "lm_head.dense.bias",
    "lm_head.layer_norm.weight": "lm_head.layer_norm.weight",
    "lm_head.layer_norm.bias": "lm_head.layer_norm.bias",
    "lm_head.decoder.weight": "lm_head.weight",
    "lm_head.bias": "lm_head.bias",
}
_DROPPED = re.compile(r"^(embeddings\.position_ids|embeddings\.position_embeddings\.weight|pooler\..*|"
                      r"classifier\..*|lm_head\.decoder\.bias)$")
_REGRESSION = ("contact_head.regression.weight", "contact_head.regression.bias")


def is_hf_esm2(path: str | Path) -> bool:
    """A folder whose config.json says ``model_type: esm`` (what ``read_hf_esm2`` reads)."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") == "esm"
    except (ValueError, OSError, AttributeError):
        return False


def weights_file(folder: str | Path) -> Path:
    """The folder's weight file: model.safetensors, else pytorch_model.bin; ModelError if neither."""
    folder = Path(folder)
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    shards = sorted(p.name for p in folder.glob("*.index.json"))
    extra = f" (sharded weights, {', '.join(shards)}, are not supported)" if shards else ""
    raise ModelError(f"ESM-2 weights not found in {folder}: no model.safetensors or pytorch_model.bin{extra}")


def read_config(folder: str | Path) -> argparse.Namespace:
    """config.json -> fair-esm's model arguments (encoder_layers, encoder_embed_dim,
    encoder_attention_heads, token_dropout), after checking it describes an ESM-2."""
    path = Path(folder) / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"ESM-2 folder {folder} has no config.json") from None
    except (ValueError, UnicodeDecodeError):
        raise ModelError(f"{path} is not JSON") from None
    if not isinstance(cfg, dict) or cfg.get("model_type") != "esm":
        raise ModelError(f"{path}: model_type is {cfg.get('model_type') if isinstance(cfg, dict) else None!r}, "
                         "not 'esm' (not an ESM-2 HuggingFace folder)")
    try:
        layers, dim, heads = (int(cfg[k]) for k in ("num_hidden_layers", "hidden_size", "num_attention_heads"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: missing or bad {exc} (an ESM-2 config names num_hidden_layers, hidden_size, "
                         "num_attention_heads)") from None
    wrong = []
    checks = [("position_embedding_type", "rotary"), ("emb_layer_norm_before", False), ("hidden_act", "gelu"),
              ("layer_norm_eps", 1e-5), ("intermediate_size", 4 * dim), ("vocab_size", len(ESM_VOCAB)),
              ("pad_token_id", 1), ("mask_token_id", len(ESM_VOCAB) - 1), ("token_dropout", True),
              ("is_folding_model", False)]
    for key, want in checks:
        got = cfg.get(key, want)
        if got != want and not (got is None and want is False):
            wrong.append(f"{key}={got!r} (ESM-2: {want!r})")
    if dim % heads or (dim // heads) % 2:
        wrong.append(f"hidden_size {dim} over {heads} heads (an even head size is needed)")
    if wrong:
        raise ModelError(f"{path} is not an ESM-2 this engine computes: {'; '.join(wrong)}")
    return argparse.Namespace(encoder_layers=layers, encoder_embed_dim=dim, encoder_attention_heads=heads,
                              token_dropout=True)


def check_vocab(folder: str | Path) -> None:
    """vocab.txt, when the folder has one, must be fair-esm's alphabet in fair-esm's order."""
    path = Path(folder) / "vocab.txt"
    if not path.is_file():
        return
    toks = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if toks != ESM_VOCAB:
        diff = next((i for i, (a, b) in enumerate(zip(toks, ESM_VOCAB)) if a != b), min(len(toks), len(ESM_VOCAB)))
        raise ModelError(f"{path}: token order differs from ESM-2's (fair-esm's alphabet) at index {diff} "
                         f"({toks[diff] if diff < len(toks) else 'end'!r} vs "
                         f"{ESM_VOCAB[diff] if diff < len(ESM_VOCAB) else 'end'!r}); its embedding rows would "
                         "be read as the wrong amino acids")


def read_weights(folder: str | Path, mmap: bool = False) -> dict:
    """The folder's state dict (tensors on the CPU), read weights-only; no global is allowed."""
    path = weights_file(folder)
    if path.suffix == ".safetensors":
        sd, _ = load_safetensors(path, "ESM-2 weights")
    else:
        sd = load_pickled(path, (), what="ESM-2 weights", mmap=mmap)
    if not isinstance(sd, dict):
        raise ModelError(f"{path} holds a {type(sd).__name__}, not a state dict")
    return sd


def to_fair_esm(sd: dict, cfg: argparse.Namespace, where: str = "the folder") -> tuple[dict, dict | None]:
    """HF state dict -> (fair-esm ESM2 state dict without prefixes, contact-regression dict or None)."""
    import torch

    strip = "esm." if any(k.startswith("esm.") for k in sd) else ""
    L, C, H = cfg.encoder_layers, cfg.encoder_embed_dim, cfg.encoder_attention_heads
    out, reg, unknown = {}, {}, []
    for key, t in sd.items():
        name = key[len(strip):] if strip and key.startswith(strip) else key
        name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name))
        if name == "rotary_embeddings.inv_freq":   # transformers 5's one shared buffer, saved as such
            name = "encoder.layer.*.attention.self.rotary_embeddings.inv_freq"
        m = _LAYER.match(name)
        if m:
            i, rest = m.groups()
            layers = range(L) if i == "*" else [int(i)]
            if rest == "attention.self.rotary_embeddings.inv_freq":
                out.update({f"layers.{j}.self_attn.rot_emb.inv_freq": t for j in layers})
                continue
            mod, _, part = rest.rpartition(".")
            if mod in _LAYER_NAMES and part in ("weight", "bias") and i != "*":
                out[f"layers.{i}.{_LAYER_NAMES[mod]}.{part}"] = t
                continue
        elif name in _TOP_NAMES:
            out[_TOP_NAMES[name]] = t
            continue
        elif name in _REGRESSION:
            reg[name] = t
            continue
        elif _DROPPED.match(name):
            continue
        unknown.append(key)
    if unknown:
        raise ModelError(f"unknown ESM-2 weight name(s) in {where}: {', '.join(sorted(unknown)[:5])}"
                         f"{' ...' if len(unknown) > 5 else ''} (not the facebook/esm2_* layout)")
    D = C // H
    for i in range(L):   # newer transformers keep inv_freq out of the state dict: fair-esm's formula
        out.setdefault(f"layers.{i}.self_attn.rot_emb.inv_freq",
                       1.0 / (10000 ** (torch.arange(0, D, 2, dtype=torch.float32) / D)))
    if "lm_head.weight" not in out and "embed_tokens.weight" in out:   # stand-in LM head (logits unused)
        emb = out["embed_tokens.weight"]
        out.update({"lm_head.weight": emb, "lm_head.bias": torch.zeros(emb.shape[0], dtype=emb.dtype),
                    "lm_head.dense.weight": torch.zeros(C, C, dtype=emb.dtype),
                    "lm_head.dense.bias": torch.zeros(C, dtype=emb.dtype),
                    "lm_head.layer_norm.weight": torch.ones(C, dtype=emb.dtype),
                    "lm_head.layer_norm.bias": torch.zeros(C, dtype=emb.dtype)})
    missing = [k for k in expected_names(L) if k not in out]
    extra = sorted(k for k in out if k not in set(expected_names(L)))
    if missing or extra:
        what = (f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}" if missing else
                f"layers beyond the config's {L}: {', '.join(extra[:3])}")
        raise ModelError(f"ESM-2 weights in {where} do not match config.json ({L} layers): {what}")
    return out, (reg if len(reg) == len(_REGRESSION) else None)


def expected_names(layers: int) -> list[str]:
    """fair-esm ESM2's state-dict names for ``layers`` layers, contact head left out."""
    names = ["embed_tokens.weight", "emb_layer_norm_after.weight", "emb_layer_norm_after.bias", "lm_head.weight",
             "lm_head.bias", "lm_head.dense.weight", "lm_head.dense.bias", "lm_head.layer_norm.weight",
             "lm_head.layer_norm.bias"]
    for i in range(layers):
        names.append(f"layers.{i}.self_attn.rot_emb.inv_freq")
        names += [f"layers.{i}.{mod}.{part}" for mod in _LAYER_NAMES.values() for part in ("weight", "bias")]
    return names


def read_hf_esm2(folder: str | Path, mmap: bool = False, regression: bool = True) -> tuple[dict, dict | None]:
    """(checkpoint, contact regression) of an HF ESM-2 folder, shaped as ``esm2.read_checkpoint``'s:
    ``{"model": fair-esm state dict, "cfg": {"model": Namespace}}`` and ``{"model": regression}`` (None
    when the folder has no contact head, or ``regression`` is False)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"ESM-2 folder not found: {folder}")
    cfg = read_config(folder)
    check_vocab(folder)
    sd, reg = to_fair_esm(read_weights(folder, mmap), cfg, str(folder))
    return {"model": sd, "cfg": {"model": cfg}}, ({"model": reg} if reg and regression else None)
