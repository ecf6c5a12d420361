"""DNABERT-2 / DNABERT-S nucleotide encoder, implemented from the architecture's description.

DNABERT-S (HF ``zhihan1996/DNABERT-S``) is a DNABERT-2-117M network: a MosaicBERT-style encoder.
The original ships its model code in the checkpoint and needs ``trust_remote_code`` (and, when Triton
is installed, a Triton attention kernel that fails on current Triton). This package re-implements the
network in plain PyTorch so the same weights load without remote code or network access:

* embeddings: word + token-type (always type 0), LayerNorm; no position embeddings.
* per layer, post-LayerNorm:
  ``x = LN(x + dense(attention(Wqkv(x))))`` then ``x = LN(x + wo(gelu(g[:, :I]) * g[:, I:]))``
  with ``g = gated_layers(x)`` (no bias, 2*I outputs; the FIRST half is passed through GELU and
  multiplies the second half) and exact (erf) GELU.
* attention: fused QKV projection laid out ``(3, heads, head_dim)`` along the output features,
  scores ``q.k / sqrt(head_dim)`` plus the symmetric ALiBi bias ``-slope_h * |i - j|``.
* output: the last layer's hidden states (no final LayerNorm).

Modules: ``network`` (config, ALiBi, the one attention function and the layer, ``DnaBert``),
``embed`` (embeddings: the reference's one sequence at a time, the fast engine's unpadded batches),
``tokenizer`` (the BPE tokenizer: loading, counting, training) and ``checkpoint`` (HF-layout folders:
loading, writing synthetic ones for tests and benchmarks without the real weights). Their public
names are all reachable from here (``dnabert.load_dnabert``, ``dnabert.mean_unpadded``, ...).
"""

from virnucpro.models.dnabert.checkpoint import (CONFIG_FILE, SAFETENSORS_FILE, SYNTHETIC_KEY, TORCH_FILE,
                                                 load_dnabert, load_state_dict_checked, read_config, read_weights,
                                                 write_synthetic_dnabert)
from virnucpro.models.dnabert.embed import embed_reference, mean_unpadded, real_token_rows, sdpa_backends
from virnucpro.models.dnabert.network import (PRESETS, VOCAB_SIZE, DnaBert, DnaBertConfig, alibi_bias, alibi_slopes,
                                              attend, attention_bias, attention_output, gated_mlp, layer_forward)
from virnucpro.models.dnabert.tokenizer import (CLS_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS, TOKENIZER_FILE,
                                                load_dna_tokenizer, train_dna_tokenizer)

__all__ = [
    "CONFIG_FILE", "SAFETENSORS_FILE", "SYNTHETIC_KEY", "TORCH_FILE", "load_dnabert", "load_state_dict_checked",
    "read_config", "read_weights", "write_synthetic_dnabert", "embed_reference", "mean_unpadded", "real_token_rows", "sdpa_backends", "PRESETS",
    "VOCAB_SIZE", "DnaBert", "DnaBertConfig", "alibi_bias", "alibi_slopes", "attend", "attention_bias",
    "attention_output", "gated_mlp", "layer_forward", "CLS_ID", "PAD_ID", "SEP_ID", "SPECIAL_TOKENS",
    "TOKENIZER_FILE", "load_dna_tokenizer", "train_dna_tokenizer",
]
