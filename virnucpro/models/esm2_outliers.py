"""Outliers planted in a synthetic ESM-2: the ``*-outliers`` presets of ``virnucpro models synth``.

What it models. Trained transformers carry *massive activations* (Sun et al. 2024, "Massive
Activations in Large Language Models"; Dettmers et al. 2022, LLM.int8()'s "outlier features"): a
handful of residual-stream channels whose values are many times every other channel's, on nearly
every token, growing with depth; through the pre-LayerNorms they become the largest inputs of the
QKV and fc1 GEMMs too. A trained ESM-2 shows the same (docs/benchmarks.md#esm2-trained-t6: in the
fine-tuned t6 one residual channel holds every token's largest value from layer 1 on, 7-11x the
median channel's max, a token's max 24-48x its median). Their weights have heavy-tailed rows too. Seeded
N(0, 0.02) weights have neither, so half-precision and FP8 fidelity measured on them is flattering:
per-token activation scales and per-output-channel weight scales see no outlier at all.

What is planted (on top of the preset's random weights; same seed, same bytes):

- ``channels`` residual channels (chosen by the seed, a random sign each): the token embeddings get
  ``embed_offset`` on them, and every layer's fc2 bias ``layer_offset`` more, so that on every token
  the channel stands about ``embed_offset + (i + 1) * layer_offset`` from zero after layer i (a
  linear growth with depth, as in the trained t6), where the random-weight stream's largest value
  over all channels and tokens is 7-12 (3B width, first 4 layers). Through each pre-LayerNorm the
  channel is also the largest GEMM input.
- heavy-tailed weight rows: in each of a layer's four linear weights (QKV, out_proj, fc1, fc2),
  ``row_share`` of the output rows are redrawn from a Student-t with ``row_df`` degrees of freedom,
  scaled to the same standard deviation (0.02): a 2560-wide row's largest |w| is then ~11.6 standard
  deviations (median over rows; a Gaussian row's ~3.6),
  which is what a per-output-channel weight scale has to cover.

The final LayerNorm (``emb_layer_norm_after``) normalises the channel like any other, so embeddings
stay usable for the calibrated classifiers. ``planted_ratio`` measures the planted effect. Measured
on the CPU (fair-esm fp32, random proteins of 30-150 residues, the defaults below): at the 3B width
(2560, 40 heads; first 4 layers) the largest residual channel's max |a| is 10.9-12.4x the median
channel's (2.0-2.2x unplanted) and 10.9-186x at the QKV inputs, always the planted channels; in the
tiny variant (64 wide) 172x (1.6x unplanted; its random stream is small), which
tests/test_esm2_outliers.py checks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class OutlierSpec:
    channels: int = 4             # residual channels made massive
    embed_offset: float = 8.0     # their value in every token's embedding
    layer_offset: float = 4.0     # added by every layer's fc2 bias
    row_share: float = 0.01       # share of each linear weight's rows that are heavy-tailed
    row_df: int = 3               # their Student-t degrees of freedom
    std: float = 0.02             # the preset's weight standard deviation (kept)


def planted_channels(dim: int, spec: OutlierSpec, seed: int) -> tuple[list[int], list[float]]:
    """(channels, signs) the seed picks for a model of width ``dim``."""
    g = torch.Generator().manual_seed(seed * 7_919 + 17)
    chans = torch.randperm(dim, generator=g)[:spec.channels].sort().values
    signs = (torch.randint(0, 2, (spec.channels,), generator=g) * 2 - 1).float()
    return chans.tolist(), signs.tolist()


def _student_t(shape: tuple, df: int, g: torch.Generator) -> torch.Tensor:
    """Student-t samples with integer ``df``: N(0,1) / sqrt(chi2(df) / df), chi2 as a sum of squares."""
    z = torch.randn(shape, generator=g)
    chi2 = torch.randn((df, *shape), generator=g).pow(2).sum(0)
    return z / (chi2 / df).sqrt()


def plant(sd: dict[str, torch.Tensor], layers: int, spec: OutlierSpec, seed: int) -> dict:
    """Plant the outliers into a fair-esm ESM2 state dict (names without prefixes; edited in place,
    dtypes kept). Returns what was planted (JSON): {"channels", "signs", "spec"}; the heavy rows
    follow from the seed (``heavy_rows``)."""
    dim = sd["embed_tokens.weight"].shape[1]
    chans, signs = planted_channels(dim, spec, seed)
    idx, sgn = torch.tensor(chans), torch.tensor(signs)
    emb = sd["embed_tokens.weight"]
    emb[:, idx] = (emb[:, idx].float() + spec.embed_offset * sgn).to(emb.dtype)
    for i in range(layers):
        b = sd[f"layers.{i}.fc2.bias"]
        b[idx] = (b[idx].float() + spec.layer_offset * sgn).to(b.dtype)
        for j, name in enumerate(("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                                  "fc1", "fc2")):
            w = sd[f"layers.{i}.{name}.weight"]
            g = torch.Generator().manual_seed(seed * 1_000_003 + 7_777 * (i + 1) + j)
            r = heavy_rows(w.shape[0], spec, g)
            k = len(r)
            scale = spec.std / (spec.row_df / (spec.row_df - 2)) ** 0.5 if spec.row_df > 2 else spec.std
            w[r] = (_student_t((k, w.shape[1]), spec.row_df, g) * scale).to(w.dtype)
    return {"channels": chans, "signs": signs, "spec": asdict(spec)}


def heavy_rows(n_rows: int, spec: OutlierSpec, g: torch.Generator) -> torch.Tensor:
    """The rows of an [n_rows, *] weight made heavy-tailed (``g`` then draws their values)."""
    k = max(1, round(spec.row_share * n_rows))
    return torch.randperm(n_rows, generator=g)[:k].sort().values


def planted_ratio(residual: torch.Tensor) -> tuple[float, list[int]]:
    """residual [tokens, C] -> (largest channel max |a| over the median channel's max |a|, the
    channels in order of their max): the measure of an outlier channel."""
    m = residual.detach().abs().float().reshape(-1, residual.shape[-1]).max(0).values
    return float(m.max() / m.median()), m.argsort(descending=True).tolist()
