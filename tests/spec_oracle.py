"""The original's arithmetic transcribed literally from the spec, as the oracle of the tests."""

import math


def spec_chunks(seq: str, C: int) -> list[str]:
    """Spec §2 as written (float division, list-built shifts). An empty sequence (the original
    divides by zero) gives no chunk, as virnucpro documents."""
    L = len(seq)
    if L == 0:
        return []
    n = math.ceil(L / C)
    repeat = n * C - L
    lower = int(repeat / n)
    upper = lower + 1
    need = repeat - lower * (n - 1)
    shift = [upper] * need + [lower] * (n - 1 - need) + [0]
    chunks, move = [], 0
    for k in range(n):
        a = k * C
        chunks.append(seq[a - move:a - move + C] if a > 1 else seq[a:a + C])
        move += shift[k]
    return chunks
