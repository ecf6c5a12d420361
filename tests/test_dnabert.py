"""Tests for virnucpro.models.dnabert.

The central check runs a deliberately naive re-statement of the DNABERT-2 architecture, written
here from the architecture's description (per-head loops, explicit LayerNorm / erf-GELU / softmax
formulas, float64), on the same weights and requires DnaBert to agree to 1e-5.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from virnucpro.errors import ModelError
from virnucpro.models import dnabert as D

# ----------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------


def _training_dna() -> str:
    """SARS-CoV-2 genome from gb2seq, or seeded random ACGT when gb2seq is not installed."""
    try:
        text = (importlib.resources.files("gb2seq") / "data" / "NC_045512.2.fasta").read_text()
        return "".join(line.strip() for line in text.splitlines() if not line.startswith(">")).upper()
    except (ModuleNotFoundError, FileNotFoundError):
        rng = random.Random(1234)
        return "".join(rng.choice("ACGT") for _ in range(30_000))


@pytest.fixture(scope="module")
def dna() -> str:
    return _training_dna()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, dna) -> Path:
    return D.write_synthetic_dnabert(tmp_path_factory.mktemp("tiny") / "dnabert", "tiny", 11, [dna])


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return D.load_dnabert(tiny_dir)


def _read_state(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").exists():
        from safetensors.torch import load_file

        return load_file(str(folder / "model.safetensors"))
    return torch.load(str(folder / "pytorch_model.bin"), weights_only=True)


def _perturbed(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Add noise to EVERY tensor (LayerNorm scales/shifts and biases too), so none of them is
    trivially 1 or 0 and a mix-up of any of them shows."""
    gen = torch.Generator().manual_seed(seed)
    return {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in state.items()}


# ----------------------------------------------------------------------------------------------
# the naive reference, written from the spec
# ----------------------------------------------------------------------------------------------


def naive_slopes(n: int) -> list[float]:
    """ALiBi paper: for n = 2^k heads the slopes are 2^(-8*1/n), 2^(-8*2/n), ..., 2^(-8*n/n).
    Otherwise take those for the power of two p just below n, then the odd-numbered slopes of the
    2p-head sequence (2^(-8*1/2p), 2^(-8*3/2p), ...) for the remaining n - p heads."""
    if n & (n - 1) == 0:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]
    p = 2 ** int(math.floor(math.log2(n)))
    return naive_slopes(p) + [2.0 ** (-8.0 * (2 * i + 1) / (2 * p)) for i in range(n - p)]


def naive_layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    rows = []
    for row in x:  # one token at a time
        mean = row.sum() / row.numel()
        var = ((row - mean) ** 2).sum() / row.numel()
        rows.append((row - mean) / torch.sqrt(var + eps) * w + b)
    return torch.stack(rows)


def naive_gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def naive_forward(state: dict[str, torch.Tensor], cfg: dict, ids: list[int]) -> torch.Tensor:
    """Last hidden state [T, H] of one unpadded sequence, float64, from the raw state dict."""
    s = {k.removeprefix("bert."): v.double() for k, v in state.items()}
    hidden, heads, inter = cfg["hidden_size"], cfg["num_attention_heads"], cfg["intermediate_size"]
    eps = cfg["layer_norm_eps"]
    d = hidden // heads
    n = len(ids)
    slopes = naive_slopes(heads)

    x = torch.stack([s["embeddings.word_embeddings.weight"][t] for t in ids])
    x = x + s["embeddings.token_type_embeddings.weight"][0]
    x = naive_layer_norm(x, s["embeddings.LayerNorm.weight"], s["embeddings.LayerNorm.bias"], eps)

    for layer in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{layer}."
        w_qkv, b_qkv = s[p + "attention.self.Wqkv.weight"], s[p + "attention.self.Wqkv.bias"]
        head_outputs = []
        for h in range(heads):
            rows_q = slice(h * d, (h + 1) * d)
            rows_k = slice(hidden + h * d, hidden + (h + 1) * d)
            rows_v = slice(2 * hidden + h * d, 2 * hidden + (h + 1) * d)
            q = x @ w_qkv[rows_q].T + b_qkv[rows_q]  # [n, d]
            k = x @ w_qkv[rows_k].T + b_qkv[rows_k]
            v = x @ w_qkv[rows_v].T + b_qkv[rows_v]
            out = torch.zeros(n, d, dtype=torch.float64)
            for i in range(n):
                logits = torch.tensor(
                    [float(q[i] @ k[j]) / math.sqrt(d) - slopes[h] * abs(i - j) for j in range(n)],
                    dtype=torch.float64,
                )
                weights = torch.exp(logits - logits.max())
                weights = weights / weights.sum()
                out[i] = weights @ v
            head_outputs.append(out)
        attended = torch.cat(head_outputs, dim=1)  # [n, hidden], head-major like the fused layout
        projected = attended @ s[p + "attention.output.dense.weight"].T + s[p + "attention.output.dense.bias"]
        x = naive_layer_norm(
            x + projected, s[p + "attention.output.LayerNorm.weight"], s[p + "attention.output.LayerNorm.bias"], eps
        )
        wide = x @ s[p + "mlp.gated_layers.weight"].T  # [n, 2*inter], no bias
        gated = naive_gelu(wide[:, :inter]) * wide[:, inter:]
        mlp_out = gated @ s[p + "mlp.wo.weight"].T + s[p + "mlp.wo.bias"]
        x = naive_layer_norm(x + mlp_out, s[p + "mlp.layernorm.weight"], s[p + "mlp.layernorm.bias"], eps)
    return x


def _assert_close(seen: torch.Tensor, expected: torch.Tensor, what: str, atol: float = 1e-5) -> None:
    diff = (seen.double() - expected.double()).abs().max().item()
    shapes = f"{tuple(seen.shape)} vs {tuple(expected.shape)}"
    assert diff <= atol, f"{what}: max |difference| {diff:.3g} exceeds {atol:g} (shapes {shapes})"


# ----------------------------------------------------------------------------------------------
# architecture
# ----------------------------------------------------------------------------------------------


def test_alibi_slopes_follow_the_alibi_rule():
    # 12 heads: 2^-1 .. 2^-8, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5
    expected = [2.0 ** -e for e in (1, 2, 3, 4, 5, 6, 7, 8, 0.5, 1.5, 2.5, 3.5)]
    seen = D.alibi_slopes(12).tolist()
    assert np.allclose(seen, expected, rtol=1e-6), f"12-head slopes: expected {expected}, seen {seen}"
    for n in (1, 4, 6, 8, 12, 16, 20):
        seen = D.alibi_slopes(n).tolist()
        assert np.allclose(seen, naive_slopes(n), rtol=1e-6), f"{n} heads: expected {naive_slopes(n)}, seen {seen}"


def test_tiny_matches_naive_reference(tiny_dir, tiny, dna):
    model, tokenizer, info = tiny
    state = _perturbed(_read_state(tiny_dir), seed=5)
    D.load_state_dict_checked(model, state)
    for start, length in ((0, 40), (1000, 150), (5000, 9)):
        ids = tokenizer.encode(dna[start : start + length]).ids
        with torch.no_grad():
            seen = model(torch.tensor([ids]))[0]
        _assert_close(seen, naive_forward(state, info["config"], ids), f"tiny model, {len(ids)} tokens")


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_twelve_heads_match_naive_reference(use_sdpa):
    # DNABERT-2's head count (not a power of two) at a small width
    cfg = D.DnaBertConfig(hidden_size=48, num_attention_heads=12, num_hidden_layers=2, intermediate_size=40)
    model = D.DnaBert(cfg, use_sdpa=use_sdpa)
    state = _perturbed({k: torch.zeros_like(v) for k, v in model.state_dict().items()}, seed=9)
    state = {k: v * 10 for k, v in state.items()}  # N(0, 0.5): strong attention and gating
    D.load_state_dict_checked(model, state)
    ids = [1] + [random.Random(3).randrange(5, 4096) for _ in range(30)] + [2]
    with torch.no_grad():
        seen = model(torch.tensor([ids]))[0]
    _assert_close(seen, naive_forward(state, cfg.to_dict(), ids), f"12-head model (sdpa={use_sdpa})")


def test_padded_batch_with_mask_equals_unpadded_runs(tiny, dna):
    model, tokenizer, _ = tiny
    seqs = [dna[100:400], dna[2000:2060], dna[7000:7150]]
    encoded = [tokenizer.encode(s).ids for s in seqs]
    longest = max(map(len, encoded))
    ids = torch.full((len(seqs), longest), D.PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(seqs), longest), dtype=torch.bool)
    for row, e in enumerate(encoded):
        ids[row, : len(e)] = torch.tensor(e)
        mask[row, : len(e)] = True
    with torch.no_grad():
        batched = model(ids, attention_mask=mask)
        for row, e in enumerate(encoded):
            alone = model(torch.tensor([e]))[0]
            _assert_close(batched[row, : len(e)], alone, f"sequence {row} in a padded batch vs alone")
            tail = batched[row, len(e) :]
            assert torch.count_nonzero(tail) == 0, f"sequence {row}: padded positions should be zeros"


@pytest.mark.parametrize("extra_width", [0, 5], ids=["tight", "padded-to-step"])
def test_unpadded_mean_is_each_sequence_alone(tiny, dna, extra_width):
    """The fast engine's DNABERT-S path (dense layers on the real tokens only, attention padded)
    gives each sequence's mean embedding as the sequence run alone does (the reference engine)."""
    model, tokenizer, _ = tiny
    seqs = [dna[100:400], dna[2000:2060], dna[7000:7150], dna[50:62]]
    encoded = [tokenizer.encode(s).ids for s in seqs]
    width = max(map(len, encoded)) + extra_width
    ids = torch.full((len(seqs), width), D.PAD_ID, dtype=torch.long)
    for row, e in enumerate(encoded):
        ids[row, : len(e)] = torch.tensor(e)
    lens = np.array([len(e) for e in encoded])
    rows = D.real_token_rows(lens, width)
    assert len(rows) == lens.sum() and rows[lens[0]] == width, "rows: the real tokens, row by row"
    with torch.no_grad():
        got = D.mean_unpadded(model, ids, torch.from_numpy(lens), torch.from_numpy(rows))
        for row, e in enumerate(encoded):
            alone = model(torch.tensor([e]))[0].mean(0)
            _assert_close(got[row], alone, f"sequence {row}: unpadded mean vs the sequence alone")


@pytest.mark.parametrize("use_sdpa", [False, True], ids=["explicit", "sdpa"])
def test_the_three_entry_points_give_the_same_means(use_sdpa):
    """The padded forward (key mask), the per-layer function (``layer_fn = layer_forward``, what the
    fast engine may compile) and the unpadded mean (row-wise layers on the real tokens) all run
    ``attend``: on a random small model (12 heads, as DNABERT-2) they give each sequence's mean
    embedding to 1e-5 in fp32, and so does the sequence run alone."""
    torch.manual_seed(4)
    cfg = D.DnaBertConfig(vocab_size=64, hidden_size=48, num_attention_heads=12, num_hidden_layers=3,
                          intermediate_size=40)
    model = D.DnaBert(cfg, use_sdpa=use_sdpa).eval()
    with torch.no_grad():
        for p in model.parameters():   # LayerNorms off 1/0 and strong attention, so a mix-up shows
            p.add_(0.3 * torch.randn_like(p))
    lens = np.array([29, 6, 17, 1, 23])
    width = 32
    ids = torch.randint(5, 64, (len(lens), width))
    mask = torch.arange(width)[None, :] < torch.from_numpy(lens)[:, None]   # [B, T]

    def masked_mean(states):   # [B, T, H] -> [B, H]
        return (states * mask[:, :, None]).sum(1) / torch.from_numpy(lens)[:, None].float()

    with torch.no_grad():
        means = {"padded forward": masked_mean(model(ids, mask))}
        model.layer_fn = D.layer_forward
        means["per-layer function"] = masked_mean(model(ids, mask))
        model.layer_fn = None
        means["unpadded mean"] = D.mean_unpadded(model, ids, torch.from_numpy(lens),
                                                 torch.from_numpy(D.real_token_rows(lens, width)))
        alone = torch.stack([model(ids[i:i + 1, :n])[0].mean(0) for i, n in enumerate(lens)])
    assert alone.abs().max() > 0.1, "the means should not be trivially small"
    for name, got in means.items():
        assert got.dtype == torch.float32 and got.shape == alone.shape, f"{name}: {got.dtype} {tuple(got.shape)}"
        _assert_close(got, alone, f"{name} vs each sequence alone")


def test_gpu_attention_leaves_out_cudnn_and_restores_the_choice():
    """On a GPU, DNABERT-S's SDPA runs without cuDNN's attention (a new execution plan per batch
    shape, the GPU idle ~45 ms each: docs/benchmarks.md, DNABERT-S attention without cuDNN); the
    process's choice is restored after; a CPU keeps torch's own choice."""
    from torch.backends import cuda as B
    before = (B.cudnn_sdp_enabled(), B.mem_efficient_sdp_enabled(), B.flash_sdp_enabled())
    with D.sdpa_backends(torch.device("cuda", 0)):
        inside = (B.cudnn_sdp_enabled(), B.mem_efficient_sdp_enabled(), B.math_sdp_enabled())
    assert inside == (False, True, True), f"inside (cudnn, mem-efficient, math): expected (False, True, True), saw {inside}"
    after = (B.cudnn_sdp_enabled(), B.mem_efficient_sdp_enabled(), B.flash_sdp_enabled())
    assert after == before, f"backends after: expected {before}, saw {after}"
    with D.sdpa_backends(torch.device("cpu")):
        on_cpu = (B.cudnn_sdp_enabled(), B.mem_efficient_sdp_enabled(), B.flash_sdp_enabled())
    assert on_cpu == before, f"on a CPU the choice is torch's: expected {before}, saw {on_cpu}"


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------


def test_both_weight_formats_load_the_same_model(tmp_path, dna):
    a = D.write_synthetic_dnabert(tmp_path / "st", "tiny", 3, [dna[:20000]], weights_format="safetensors")
    b = D.write_synthetic_dnabert(tmp_path / "bin", "tiny", 3, [dna[:20000]], weights_format="bin")
    assert (a / "model.safetensors").is_file() and not (a / "pytorch_model.bin").exists()
    assert (b / "pytorch_model.bin").is_file() and not (b / "model.safetensors").exists()
    model_a, tok, info_a = D.load_dnabert(a)
    model_b, _, info_b = D.load_dnabert(b)
    assert info_a["weights_format"] == "safetensors" and info_b["weights_format"] == "bin"
    ids = torch.tensor([tok.encode(dna[:200]).ids])
    with torch.no_grad():
        assert torch.equal(model_a(ids), model_b(ids)), "same seed, two formats: outputs differ"


@pytest.mark.parametrize("victim", ["config.json", "model.safetensors", "tokenizer.json", "<folder>"])
def test_missing_file_is_a_model_error_naming_it(tmp_path, tiny_dir, victim):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_dir, folder)
    if victim == "<folder>":
        shutil.rmtree(folder)
        named = str(folder)
    else:
        (folder / victim).unlink()
        named = str(folder / victim)
    with pytest.raises(ModelError) as err:
        D.load_dnabert(folder)
    assert named in str(err.value), f"message should name {named}; got: {err.value}"


def test_unreadable_weights_are_a_model_error(tmp_path, tiny_dir):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_dir, folder)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="cannot read DNABERT weights"):
        D.load_dnabert(folder)


def test_prefixed_and_unprefixed_keys_load_alike(tiny_dir, tiny, dna):
    model, tokenizer, info = tiny
    plain = _perturbed(_read_state(tiny_dir), seed=21)
    prefixed = {f"bert.{k}": v for k, v in plain.items()}
    prefixed["cls.predictions.transform.dense.weight"] = torch.zeros(4, 4)  # MLM head: ignored
    ids = torch.tensor([tokenizer.encode(dna[300:500]).ids])
    outputs = []
    for state in (plain, prefixed):
        ignored = D.load_state_dict_checked(model, state)
        assert all(k.split(".")[0] in ("pooler", "cls") or k.startswith("bert.pooler") for k in ignored), (
            f"only pooler / MLM-head keys should be ignored, got {ignored}"
        )
        with torch.no_grad():
            outputs.append(model(ids))
    assert torch.equal(outputs[0], outputs[1]), "bert.-prefixed and plain keys gave different outputs"
    _assert_close(outputs[0][0], naive_forward(plain, info["config"], ids[0].tolist()), "after reload")


def test_missing_or_misshapen_weight_is_refused(tiny_dir, tiny):
    model = tiny[0]
    state = _read_state(tiny_dir)
    key = "encoder.layer.1.mlp.gated_layers.weight"
    without = {k: v for k, v in state.items() if k != key}
    with pytest.raises(ModelError) as err:
        D.load_state_dict_checked(model, without)
    assert key in str(err.value), f"message should name {key}: {err.value}"
    misshapen = dict(state, **{"encoder.layer.0.attention.self.Wqkv.weight": torch.zeros(5, 5)})
    with pytest.raises(ModelError) as err:
        D.load_state_dict_checked(model, misshapen)
    assert "encoder.layer.0.attention.self.Wqkv.weight" in str(err.value), str(err.value)


def test_config_round_trip_and_foreign_fields(tiny_dir):
    raw = json.loads((tiny_dir / "config.json").read_text())
    assert raw["virnucpro_synthetic"] == {"preset": "tiny", "seed": 11, "note": "random weights - not biology"}
    assert "auto_map" not in raw, "synthetic config.json must not ask for remote code"
    raw["auto_map"] = {"AutoModel": "bert_layers.BertModel"}
    raw["_name_or_path"] = "zhihan1996/DNABERT-2-117M"
    cfg = D.DnaBertConfig.from_dict(raw)
    assert D.DnaBertConfig.from_dict(cfg.to_dict()) == cfg
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.vocab_size) == (64, 4, 4096), cfg
    with pytest.raises(ModelError, match="hidden_size"):
        D.DnaBertConfig.from_dict({k: v for k, v in raw.items() if k != "hidden_size"})


def test_full_preset_config_is_dnabert2_117m(tmp_path):
    cfg = D.DnaBertConfig(**D.PRESETS["full"])
    expected = dict(
        num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072, vocab_size=4096
    )
    seen = {k: getattr(cfg, k) for k in expected}
    assert seen == expected, f"full preset: expected {expected}, seen {seen}"
    n_params = sum(p.numel() for p in D.DnaBert(cfg).parameters())
    assert 115e6 < n_params < 119e6, f"DNABERT-2-117M should have ~117M encoder parameters, built {n_params}"


# ----------------------------------------------------------------------------------------------
# tokenizer
# ----------------------------------------------------------------------------------------------


def test_tokenizer_frames_with_cls_sep_and_has_4096_tokens(tiny, dna):
    tokenizer = tiny[1]
    assert tokenizer.get_vocab_size() == 4096, f"vocab size: expected 4096, seen {tokenizer.get_vocab_size()}"
    specials = {t: tokenizer.token_to_id(t) for t in D.SPECIAL_TOKENS}
    assert specials == {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "[PAD]": 3, "[MASK]": 4}, specials
    seq = dna[12345:12645]
    enc = tokenizer.encode(seq)
    assert enc.ids[0] == 1 and enc.ids[-1] == 2, f"expected [CLS] ... [SEP], got {enc.ids[:3]} ... {enc.ids[-3:]}"
    assert "".join(enc.tokens[1:-1]) == seq, "BPE tokens must spell the sequence back"
    assert len(enc.ids) < len(seq) / 2, f"BPE should merge: {len(enc.ids)} tokens for {len(seq)} nt"
    assert len(tokenizer.encode(dna[:20000]).ids) > 512, "no truncation expected for long input"


def test_tokenizer_without_post_processor_gets_the_template(tmp_path, tiny_dir):
    folder = tmp_path / "tok"
    folder.mkdir()
    data = json.loads((tiny_dir / "tokenizer.json").read_text())
    data["post_processor"] = None
    (folder / "tokenizer.json").write_text(json.dumps(data))
    ids = D.load_dna_tokenizer(folder).encode("ACGTACGTTTGACC").ids
    assert ids[0] == D.CLS_ID and ids[-1] == D.SEP_ID, f"template not added: {ids}"


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, dna):
    short = [dna[:15000]]
    a = _read_state(D.write_synthetic_dnabert(tmp_path / "a", "tiny", 42, short))
    b = _read_state(D.write_synthetic_dnabert(tmp_path / "b", "tiny", 42, short))
    c = _read_state(D.write_synthetic_dnabert(tmp_path / "c", "tiny", 43, short))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "seed 42 twice gave different weights"
    differing = [k for k in a if not torch.equal(a[k], c[k])]
    assert "embeddings.word_embeddings.weight" in differing, "seeds 42 and 43 gave the same embeddings"
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()
    assert "bert.embeddings.word_embeddings.weight" not in a, "DNABERT-S (BertModel) keys carry no bert. prefix"
    assert "pooler.dense.weight" in a, "DNABERT-S checkpoints carry a pooler"


# ----------------------------------------------------------------------------------------------
# reference embedding
# ----------------------------------------------------------------------------------------------


def test_embed_reference_is_mean_over_all_tokens_including_cls_sep(tiny, dna):
    model, tokenizer, _ = tiny
    seqs = [dna[50:350], dna[900:1000], dna[4000:4501]]
    done: list[int] = []
    emb = D.embed_reference(model, tokenizer, seqs, "cpu", on_done=done.append)
    assert emb.shape == (3, 64) and emb.dtype == np.float32, f"shape/dtype {emb.shape} {emb.dtype}"
    assert done == [1, 2, 3], f"progress callback calls: {done}"
    for i, seq in enumerate(seqs):
        ids = tokenizer.encode(seq).ids
        with torch.no_grad():
            states = model(torch.tensor([ids]))[0].double()  # [T, H]
        manual_all = (states.sum(dim=0) / len(ids)).numpy()
        manual_inner = states[1:-1].mean(dim=0).numpy()
        assert np.allclose(emb[i], manual_all, atol=1e-6), f"seq {i}: not the mean over all {len(ids)} tokens"
        assert not np.allclose(emb[i], manual_inner, atol=1e-4), f"seq {i}: [CLS]/[SEP] seem excluded"


def test_functional_layer_is_the_module_layer_and_compiles_for_any_shape():
    """``layer_forward`` (what the fast engine may torch.compile, EngineConfig.dnabert_compile) computes
    exactly what the layer modules compute; compiled with dynamic shapes it serves a second batch
    size and width without a new compilation and agrees to float rounding."""
    import torch
    from virnucpro.engines.fast.engine import compile_dynamic
    torch.manual_seed(0)
    cfg = D.DnaBertConfig.from_dict(dict(vocab_size=64, **D.PRESETS["tiny"]))
    m = D.DnaBert(cfg, use_sdpa=True).eval()
    ids = torch.randint(5, 64, (6, 24))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[2, 17:] = False
    with torch.inference_mode():
        want = m(ids, mask)
        m.layer_fn = D.layer_forward
        assert torch.equal(m(ids, mask), want), "layer_fn = layer_forward differs from the model's loop"
        m.layer_fn = compile_dynamic(D.layer_forward)
        got = m(ids, mask)
        assert (got - want).abs().max().item() < 1e-5
        from torch._dynamo.utils import counters
        frames_before = counters["stats"]["unique_graphs"]
        ids2 = torch.randint(5, 64, (3, 40))
        mask2 = torch.ones_like(ids2, dtype=torch.bool)
        got2 = m(ids2, mask2)
        m.layer_fn = None
        assert (got2 - m(ids2, mask2)).abs().max().item() < 1e-5
        assert counters["stats"]["unique_graphs"] == frames_before, "a new batch size/width recompiled"
