"""The DNABERT-2 BPE tokenizer: loading a checkpoint's tokenizer.json so that it frames a sequence
with [CLS] ... [SEP] as the original does, counting tokens for batching, and training one for
synthetic checkpoints (the recipe DNABERT-2's authors published)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer

from virnucpro.errors import InputError, ModelError
from virnucpro.models.dnabert.network import VOCAB_SIZE

TOKENIZER_FILE = "tokenizer.json"

# Special tokens of the DNABERT-2 BPE vocabulary, in id order ([UNK]=0 ... [MASK]=4).
SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")
CLS_ID, SEP_ID, PAD_ID = 1, 2, 3


def _template_processor(cls_id: int, sep_id: int):
    from tokenizers.processors import TemplateProcessing

    return TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )


def load_dna_tokenizer(folder: str | Path) -> Tokenizer:
    """Load ``folder/tokenizer.json`` so that ``encode(dna).ids`` is ``[CLS] ... [SEP]``.

    The template post-processor is added only when the file has none. Truncation and padding are
    switched off (the original tokenises each sequence whole). ModelError when the file is missing,
    unreadable, lacks [CLS]/[SEP], or does not frame a sequence with them.
    """
    path = Path(folder) / TOKENIZER_FILE
    if not path.exists():
        raise ModelError(f"DNABERT tokenizer file not found: {path}")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise ModelError(f"cannot read DNABERT tokenizer {path}: {exc}") from None
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise ModelError(f"DNABERT tokenizer {path} lacks the [CLS] or [SEP] token")
    if tokenizer.post_processor is None:
        tokenizer.post_processor = _template_processor(cls_id, sep_id)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    ids = tokenizer.encode("ACGT").ids
    if len(ids) < 3 or ids[0] != cls_id or ids[-1] != sep_id:
        raise ModelError(f"DNABERT tokenizer {path} does not add [CLS] ... [SEP] (got ids {ids})")
    return tokenizer


def _dna_lines(training_dna: Iterable[str], line_length: int = 1000) -> list[str]:
    """Upper-cased training DNA cut into lines (BPE merges never cross a line)."""
    lines: list[str] = []
    for seq in training_dna:
        seq = "".join(seq.split()).upper()
        lines.extend(seq[i : i + line_length] for i in range(0, len(seq), line_length))
    return lines


def _random_dna(seed: int, length: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("ACGT") for _ in range(length))


def train_dna_tokenizer(training_dna: Iterable[str], seed: int, vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """Train a DNABERT-2-style BPE tokenizer: [UNK] [CLS] [SEP] [PAD] [MASK] = 0..4, no normalizer,
    Whitespace pre-tokenizer, template ``[CLS] $A [SEP]`` - the recipe DNABERT-2's authors published.

    When the given DNA is too little to reach ``vocab_size`` tokens, seeded random ACGT is added.
    """
    from tokenizers import models, pre_tokenizers, trainers

    lines = _dna_lines(training_dna)
    for attempt in range(4):
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=list("ACGT"),
            show_progress=False,
        )
        tokenizer.train_from_iterator(lines, trainer=trainer)
        if tokenizer.get_vocab_size() >= vocab_size:
            break
        lines += _dna_lines([_random_dna(seed * 1000 + attempt, 20_000 * (attempt + 1))])
    if tokenizer.get_vocab_size() != vocab_size:
        raise InputError(f"could not train a {vocab_size}-token DNA tokenizer (got {tokenizer.get_vocab_size()})")
    tokenizer.post_processor = _template_processor(CLS_ID, SEP_ID)
    return tokenizer
