"""The packed ESM-2 forward against fair-esm's own ESM2 on the same checkpoint."""

import numpy as np
import pytest
import torch

from virnucpro.models.esm2 import embed_reference, load_esm2
from virnucpro.models.esm2_fast import PackedESM2, flops_per_token, tokenize

AAS = np.array(list("ACDEFGHIKLMNPQRSTVWY"))


@pytest.fixture(scope="module")
def esm(tiny_models):
    path = next(p for p in tiny_models.glob("esm2_*.pt") if "contact" not in p.name)
    fair, alphabet, _ = load_esm2(path)
    packed, _ = PackedESM2.from_checkpoint(path, "cpu", torch.float32)
    return fair, alphabet, packed


def random_proteins(n, seed, lo=1, hi=166):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(AAS, int(rng.integers(lo, hi + 1)))) for _ in range(n)]


def packed_embed(model, alphabet, proteins, pad_to=None):
    tok, cu, pos, max_len = tokenize(alphabet, proteins, pad_to=pad_to)
    with torch.inference_mode():
        cu_t = torch.from_numpy(cu)
        h = model(torch.from_numpy(tok).long(), cu_t, torch.from_numpy(pos).long(), max_len)
        return PackedESM2.mean_residues(h, cu_t).numpy()[:len(proteins)]


def test_fp32_packed_forward_matches_fair_esm(esm):
    fair, alphabet, packed = esm
    prots = random_proteins(40, seed=1) + ["M", "W" * 166]
    got = packed_embed(packed, alphabet, prots)
    want = embed_reference(fair, alphabet, prots)
    err = np.abs(got - want).max()
    assert err <= 1e-4, f"packed fp32 ESM-2 differs from fair-esm by {err:.2e} (target <= 1e-4)"


def test_hidden_states_match_fair_esm_per_token(esm):
    """Not only the means: every residue's final representation (layer L, after the last LayerNorm)."""
    fair, alphabet, packed = esm
    prots = random_proteins(5, seed=2)
    _, _, toks = alphabet.get_batch_converter()([(str(i), p) for i, p in enumerate(prots)])
    with torch.inference_mode():
        ref = fair(toks, repr_layers=[fair.num_layers])["representations"][fair.num_layers]
        tok, cu, pos, max_len = tokenize(alphabet, prots)
        h = packed(torch.from_numpy(tok).long(), torch.from_numpy(cu), torch.from_numpy(pos).long(), max_len)
    for i, p in enumerate(prots):
        s = int(cu[i])
        err = (h[s:s + len(p) + 2] - ref[i, :len(p) + 2]).abs().max().item()
        assert err <= 1e-4, f"protein {i}: per-token difference {err:.2e}"


def test_sequence_embedding_does_not_depend_on_its_batch_mates(esm):
    """Packing never mixes sequences: alone, first, last or among others gives the same embedding."""
    _, alphabet, packed = esm
    target = random_proteins(1, seed=3, lo=80, hi=80)[0]
    others = random_proteins(30, seed=4)
    alone = packed_embed(packed, alphabet, [target])[0]
    first = packed_embed(packed, alphabet, [target] + others)[0]
    last = packed_embed(packed, alphabet, others + [target])[-1]
    padded = packed_embed(packed, alphabet, others + [target], pad_to=4000)[-1]
    for name, e in (("first", first), ("last", last), ("padded to the budget", padded)):
        err = np.abs(e - alone).max()
        assert err <= 1e-5, f"embedding changes when packed {name}: {err:.2e}"


def test_token_dropout_scale_with_mask_tokens(esm):
    """fair-esm rescales embeddings by 0.88 / (1 - mask share): same with <mask> tokens present."""
    fair, alphabet, packed = esm
    prot = "MKTAYIAKQRQISFVKSHFSRQ"
    toks = torch.tensor([[alphabet.cls_idx] + [alphabet.get_idx(c) for c in prot] + [alphabet.eos_idx]])
    toks[0, 3] = toks[0, 7] = alphabet.mask_idx
    with torch.inference_mode():
        ref = fair(toks, repr_layers=[fair.num_layers])["representations"][fair.num_layers][0]
        cu = torch.tensor([0, toks.shape[1]], dtype=torch.int32)
        got = packed(toks[0], cu, torch.arange(toks.shape[1]), toks.shape[1])
    assert (got - ref).abs().max().item() <= 1e-4


def test_reduced_precision_stays_close(esm, tiny_models):
    path = next(p for p in tiny_models.glob("esm2_*.pt") if "contact" not in p.name)
    _, alphabet, packed = esm
    half, _ = PackedESM2.from_checkpoint(path, "cpu", torch.bfloat16)
    prots = random_proteins(20, seed=5)
    a, b = packed_embed(packed, alphabet, prots), packed_embed(half, alphabet, prots)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() >= 0.999, f"bf16 embedding cosine {cos.min():.5f} < 0.999"


def test_flops_per_token_of_esm2_3b():
    assert abs(flops_per_token(36, 2560) - 5.66e9) / 5.66e9 < 0.01


def test_the_tanh_gelu_is_a_per_call_choice_and_off_by_default(esm):
    """The fc1+GELU epilogue (cuBLASLt on CUDA) computes GELU's tanh approximation; ESM-2's own GELU
    is exact, so a model instance uses the exact one unless told otherwise (the fast engine does, in
    fp16/bf16 on a GPU)."""
    import torch.nn.functional as F
    from virnucpro.models import esm2_fast
    _, _, packed = esm
    assert packed.gelu == "exact" and PackedESM2(1, 8, 2).gelu == "exact"
    torch.manual_seed(0)
    x, w, b = torch.randn(7, 16), torch.randn(24, 16), torch.randn(24)
    got = esm2_fast.linear_gelu_tanh(x, w, b)
    assert torch.allclose(got, F.gelu(F.linear(x, w, b), approximate="tanh"), atol=1e-6)
    assert (got - F.gelu(F.linear(x, w, b))).abs().max() > 1e-5, "indistinguishable from the exact GELU"
    C, T = 16, 9   # x, attention output, out proj, LayerNorm, fc1, fc2
    args = (torch.randn(T, C), torch.randn(T, 4, C // 4), torch.randn(C, C), torch.randn(C), torch.ones(C),
            torch.zeros(C), torch.randn(4 * C, C), torch.randn(4 * C), torch.randn(C, 4 * C), torch.randn(C))
    exact = esm2_fast.post_attention(*args)
    approx = esm2_fast.post_attention(*args, gelu_tanh=True)
    assert 0 < (approx - exact).abs().max() < 1e-2, "gelu_tanh did not switch the feed-forward's GELU"


def _twin(path, **choices):
    """Another instance of the tiny ESM-2 in this process, with its own kernel choices."""
    m, _ = PackedESM2.from_checkpoint(path, "cpu", torch.float32)
    return m.set_kernels(**choices)


def test_two_instances_compute_each_with_its_own_choices(esm, tiny_models, monkeypatch):
    """Kernels and GELU are per instance (no module state): instances with different choices in one
    process, called in turn, each keep computing with theirs."""
    from virnucpro.models import esm2_fast
    path = next(p for p in tiny_models.glob("esm2_*.pt") if "contact" not in p.name)
    _, alphabet, _ = esm
    exact, tanh = _twin(path), _twin(path, gelu="tanh-epilogue")
    prots = random_proteins(8, seed=7)
    a1 = packed_embed(exact, alphabet, prots)
    t1 = packed_embed(tanh, alphabet, prots)
    a2 = packed_embed(exact, alphabet, prots)
    assert np.array_equal(a1, a2), "the exact-GELU instance changed after the tanh one ran"
    assert np.abs(t1 - a1).max() > 1e-6, "the tanh-GELU instance computed the exact GELU"
    assert np.array_equal(t1, packed_embed(_twin(path, gelu="tanh-epilogue"), alphabet, prots))

    # the Triton kernels need a GPU (or Triton's interpreter): stand-ins that count their calls
    calls = {"pre": 0, "post": 0, "post_pre": 0}

    def counting(name, fn):
        def call(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return call
    fake = esm2_fast.KernelSet(*(counting(n, getattr(esm2_fast.EAGER, n)) for n in ("pre", "post", "post_pre")))
    monkeypatch.setitem(esm2_fast.KERNEL_SETS, "triton", fake)
    triton = _twin(path, kernels="triton")
    got = packed_embed(triton, alphabet, prots)
    n_layers = len(triton.layers)
    assert calls == {"pre": 1, "post": 1, "post_pre": n_layers - 1}, calls
    packed_embed(exact, alphabet, prots)
    assert calls["pre"] == 1, "the eager instance ran the other instance's kernels"
    assert np.array_equal(got, a1) and (triton.kernels, exact.kernels) == ("triton", "eager")


def test_an_unknown_kernel_or_gelu_choice_is_refused():
    with pytest.raises(ValueError, match="kernels 'compile'"):
        PackedESM2(1, 8, 2, kernels="compile")
    with pytest.raises(ValueError, match="gelu 'tanh'"):
        PackedESM2(1, 8, 2).set_kernels(gelu="tanh")


@pytest.mark.parametrize("gelu, precision, device, expected", [
    ("tanh-epilogue", "fp16", "cuda", True), ("tanh-epilogue", "bf16", "cuda", True),   # the default on a GPU
    ("tanh-epilogue", "fp32", "cuda", False),   # fp32 must match fair-esm to 1e-4: always the exact GELU
    ("tanh-epilogue", "fp16", "cpu", False),    # no fused kernel on a CPU
    ("exact", "fp16", "cuda", False),
])
def test_which_gelu_the_fast_engine_uses(gelu, precision, device, expected):
    from virnucpro.engines.config import EngineConfig
    assert EngineConfig().gelu == "tanh-epilogue"
    got = EngineConfig(precision=precision, gelu=gelu).gelu_epilogue(device)
    assert got is expected, f"gelu={gelu} {precision} on {device}: expected {expected}, got {got}"


def test_forward_through_the_first_layers_only(esm):
    """``n_layers`` (the engine's warm-up runs two) is the model cut after that many layers: all
    layers when None, and a different result with fewer."""
    from virnucpro.models import esm2_fast
    _, alphabet, packed = esm
    tok, cu, pos, max_len = esm2_fast.tokenize(alphabet, random_proteins(3, seed=2))
    args = (torch.from_numpy(tok).long(), torch.from_numpy(cu), torch.from_numpy(pos).long(), max_len)
    with torch.inference_mode():
        full = packed(*args)
        assert torch.equal(packed(*args, n_layers=len(packed.layers)), full)
        assert not torch.allclose(packed(*args, n_layers=1), full), "one layer gave the whole model's output"


# -- the staged weight copy (virnucpro.models.transfer): its lanes run on a CPU destination too ------

@pytest.mark.parametrize("threads,chunk_bytes", [(1, 1 << 20), (3, 4096), (8, 6)])
def test_staged_copy_equals_a_plain_copy(threads, chunk_bytes):
    from virnucpro.models.transfer import copy_to_device
    g = torch.Generator().manual_seed(0)
    shapes = [((7, 13), torch.float16), ((70001,), torch.float32), ((5,), torch.float16),
              ((300, 1000), torch.bfloat16), ((1,), torch.float32)]
    srcs = [torch.randn(s, generator=g).to(dt) for s, dt in shapes]
    dsts = [torch.full(s, float("nan"), dtype=torch.float32) for s, _ in shapes]
    copy_to_device(list(zip(srcs, dsts)), threads=threads, chunk_bytes=chunk_bytes)
    for i, (s, d) in enumerate(zip(srcs, dsts)):
        assert torch.equal(d, s.float()), f"tensor {i} {tuple(s.shape)} {s.dtype}: copy differs"


def test_staged_copy_reports_a_failing_lane():
    from virnucpro.models.transfer import copy_to_device
    with pytest.raises(ValueError, match="copy of 10 elements into 9"):
        copy_to_device([(torch.zeros(10), torch.zeros(9)), (torch.zeros(4), torch.zeros(4))], threads=2)


def test_staged_fused_state_equals_the_plain_one(tiny_models):
    from virnucpro.models.esm2_fast import fuse_state, fuse_state_staged
    path = next(p for p in tiny_models.glob("esm2_*.pt") if "contact" not in p.name)
    data = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    sd = {k.replace("encoder.sentence_encoder.", "").replace("encoder.", ""): v for k, v in data["model"].items()}
    n = data["cfg"]["model"].encoder_layers
    plain = fuse_state(sd, n, to=lambda t: t.to(torch.float32))
    staged = fuse_state_staged(sd, n, torch.device("cpu"), torch.float32)
    assert plain.keys() == staged.keys()
    bad = [k for k in plain if not torch.equal(plain[k], staged[k])]
    assert not bad, f"staged copy differs in {bad[:5]}"


# -- the Triton kernels (the GPU default), run by Triton's interpreter on the CPU ---------------------

triton = pytest.importorskip("triton", reason="Triton is not installed (pip install triton): kernel tests need its interpreter")


@pytest.mark.parametrize("with_y", [True, False])
@pytest.mark.parametrize("T,C", [(37, 64), (5, 40), (1, 2560)])
def test_add_layernorm_kernel_equals_torch(interpret, with_y, T, C):
    import torch.nn.functional as F
    from virnucpro.models.esm2_triton import add_layernorm
    g = torch.Generator().manual_seed(T * C)
    x = torch.randn(T, C, generator=g) * 3
    y = torch.randn(T, C, generator=g).half() if with_y else None
    w, b = torch.randn(C, generator=g), torch.randn(C, generator=g)
    want_x = x + y.float() if with_y else x.clone()
    want_h = F.layer_norm(want_x, (C,), w, b, 1e-5)
    got_x = x.clone()
    h = add_layernorm(got_x, y, w, b, torch.float32)
    assert torch.equal(got_x, want_x), "the residual stream must be x + y exactly"
    err = (h - want_h).abs().max().item()
    assert err < 1e-5, f"LayerNorm differs from torch's by {err}"


@pytest.mark.parametrize("T,heads,D", [(37, 4, 16), (3, 40, 64), (9, 5, 8), (6, 20, 24)])   # D=24: ESM-2 35M's
def test_rope_kernel_equals_the_eager_rotary(interpret, T, heads, D):
    from virnucpro.models.esm2_fast import RotaryTable, rope
    from virnucpro.models.esm2_triton import rope_qk
    C = heads * D
    g = torch.Generator().manual_seed(T + heads)
    qkv = torch.randn(T, 3 * C, generator=g).half()
    pos = torch.randint(0, 100, (T,), generator=g)
    table = RotaryTable(D)
    cos, sin = table.cos[pos][:, None, :], table.sin[pos][:, None, :]
    q, k = rope_qk(qkv, cos, sin, heads)
    assert q.shape == (T, heads, D) and q.is_contiguous() and k.is_contiguous()
    assert torch.equal(q, rope(qkv[:, :C].view(T, heads, D), cos, sin))
    assert torch.equal(k, rope(qkv[:, C:2 * C].view(T, heads, D), cos, sin))


def test_triton_kernels_compute_the_eager_forward(esm, interpret, tiny_models):
    """The whole packed forward with the Triton kernels (in place residual updates, fused passes)
    against the eager functions, on the tiny model in fp32."""
    _, alphabet, packed = esm
    path = next(p for p in tiny_models.glob("esm2_*.pt") if "contact" not in p.name)
    proteins = random_proteins(9, seed=3)
    want = packed_embed(packed, alphabet, proteins)
    triton_model = _twin(path, kernels="triton")
    got = packed_embed(triton_model, alphabet, proteins)
    err = float(np.abs(np.asarray(got) - np.asarray(want)).max())
    assert err < 1e-4, f"Triton-kernel forward differs from the eager one by {err}"


@pytest.mark.parametrize("kernels,device,triton_ok,expected", [
    ("auto", "cuda", True, "triton"),       # the GPU default
    ("auto", "cuda", False, "eager"),       # no Triton installed
    ("eager", "cuda", True, "eager"),       # --no-compile
    ("auto", "cpu", True, "eager"),         # a CPU never runs GPU kernels
])
def test_which_esm_kernels_the_fast_engine_uses(kernels, device, triton_ok, expected):
    from virnucpro.engines.config import EngineConfig
    got = EngineConfig(esm_kernels=kernels).kernels_on(device, triton_ok)
    assert got == expected, f"esm_kernels={kernels} on {device} (Triton: {triton_ok}): expected {expected}, got {got}"


@pytest.mark.parametrize("field,value,match", [("esm_kernels", "compile", "ESM-2 kernels 'compile'"),
                                               ("gelu", "tanh", "GELU 'tanh'"), ("precision", "fp4", "precision")])
def test_a_bad_engine_setting_is_an_input_error(field, value, match):
    from virnucpro.engines.config import EngineConfig
    from virnucpro.errors import InputError
    with pytest.raises(InputError, match=match):
        EngineConfig(**{field: value})


def test_warming_the_kernels_runs_both_on_one_row(interpret):
    from virnucpro.models import esm2_triton
    calls = []
    real_ln, real_rope = esm2_triton.add_layernorm, esm2_triton.rope_qk
    try:
        esm2_triton.add_layernorm = lambda *a, **k: calls.append("ln") or real_ln(*a, **k)
        esm2_triton.rope_qk = lambda *a, **k: calls.append("rope") or real_rope(*a, **k)
        seconds = esm2_triton.warm(64, 4, torch.float16, torch.device("cpu"))
    finally:
        esm2_triton.add_layernorm, esm2_triton.rope_qk = real_ln, real_rope
    assert calls == ["ln", "ln", "rope"] and seconds >= 0
