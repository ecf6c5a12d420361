"""DNABERT-S embeddings: the mean of the last hidden state over a sequence's tokens ([CLS] and [SEP]
included), one sequence at a time as the original computes it (``embed_reference``, the reference
engine) or a padded batch at once with the row-wise layers on the real tokens only
(``mean_unpadded``, the fast engine, under ``sdpa_backends``)."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch
from tokenizers import Tokenizer

from virnucpro.models.dnabert.network import DnaBert, attend, attention_bias, attention_output, gated_mlp


def sdpa_backends(device: torch.device):
    """The SDPA backends DNABERT-S's attention may use on ``device`` (a context manager). On a GPU,
    cuDNN's attention is left out: it builds an execution plan for every new batch shape (~45 ms on
    an H200, the GPU idle meanwhile: docs/benchmarks.md, DNABERT-S attention without cuDNN), and
    DNABERT-S's batches come in many shapes (rows x width vary by unit). The memory-efficient kernel
    takes the ALiBi bias as is, with no per-shape set-up. On a CPU, torch's own choice."""
    from contextlib import nullcontext
    if torch.device(device).type != "cuda":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def real_token_rows(lengths: np.ndarray, width: int) -> np.ndarray:
    """Positions of the real tokens of a padded [B, width] batch in its flattened [B * width] form,
    row by row (int64 [sum(lengths)]); computed on the host, so that the GPU never has to tell."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.flatnonzero(np.arange(width)[None, :] < lengths[:, None])


def mean_unpadded(model: DnaBert, input_ids: torch.Tensor, lengths: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Per sequence, the mean of the last hidden state over its tokens ([CLS]/[SEP] included):
    float32 [B, H] -- what ``model(input_ids, mask)`` gives, masked and averaged -- with every
    row-wise part of the network (embeddings, the four linear layers, both LayerNorms, GEGLU) run on
    the real tokens only; just the attention sees the padded [B, T] layout (its ALiBi bias masks
    padded keys, so the real tokens' outputs do not depend on the padding). ``rows`` =
    ``real_token_rows(lengths, T)`` on the model's device; ``lengths`` [B] on it too. SDPA attention."""
    cfg = model.config
    batch, length = input_ids.shape
    hidden, heads, eps = cfg.hidden_size, cfg.num_attention_heads, cfg.layer_norm_eps
    x = model.embeddings(input_ids.reshape(-1)[rows])                                          # [N, H]
    keep = torch.arange(length, device=x.device)[None, :] < lengths[:, None]                      # [B, T]
    bias = attention_bias(heads, length, x.dtype, x.device, keep)                               # [B, nH, T, T]
    qkv_pad = x.new_zeros(batch * length, 3 * hidden)   # padded rows stay zero: keys masked, queries dropped
    for layer in model.encoder.layer:
        w = layer.weights()
        qkv_pad[rows] = torch.nn.functional.linear(x, w[0], w[1])                               # [N, 3H]
        ctx = attend(qkv_pad.view(batch, length, 3 * hidden), bias, heads)                      # [B, T, H]
        x = gated_mlp(attention_output(ctx.view(batch * length, hidden)[rows], x, w, eps), w, eps)   # [N, H]
    out = x.new_zeros(batch * length, hidden)
    out[rows] = x
    return out.view(batch, length, hidden).float().sum(1) / lengths[:, None].float()


def embed_reference(
    model: DnaBert,
    tokenizer: Tokenizer,
    seqs: Sequence[str],
    device: torch.device | str,
    on_done: Optional[Callable[[int], None]] = None,
) -> np.ndarray:
    """Nucleotide embeddings as VirNucPro computes them: float32 [N, hidden].

    One sequence per forward, no attention mask, no truncation; the embedding is the mean of the
    last hidden state over ALL tokens, [CLS] and [SEP] included. ``on_done(n)`` is called after
    each sequence with the number done so far. The model should be float32 (the original's dtype).
    """
    hidden = model.config.hidden_size
    out = np.empty((len(seqs), hidden), dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for i, seq in enumerate(seqs):
            ids = torch.tensor([tokenizer.encode(seq).ids], dtype=torch.long, device=device)  # [1, T]
            states = model(ids)  # [1, T, H]
            out[i] = torch.mean(states[0], dim=0).float().cpu().numpy()
            if on_done is not None:
                on_done(i + 1)
    return out
