"""``virnucpro classify``: the classifier step alone, over the features a ``predict --save-embeddings``
run kept (``OUTDIR/embeddings/``): another classifier (e.g. one trained on those features) labels
the same frames in seconds, without embedding anything again. Writes the original's two files.

Reads one part at a time (~13 KB per frame in memory for the part, 8 bytes per frame for the scores).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from virnucpro.errors import InputError
from virnucpro.outputs import EMBEDDING_INDEX, EMBEDDINGS, MANIFEST, write_manifest, write_predictions

def read_index(source: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(frame ids, part file per frame, row per frame) of ``source/embeddings/index.tsv``."""
    index = source / EMBEDDINGS / EMBEDDING_INDEX
    if not index.is_file():
        raise InputError(f"{source} has no {EMBEDDINGS}/{EMBEDDING_INDEX}: run `virnucpro predict ... "
                         "--save-embeddings` first (only such a run keeps the features)")
    ids, parts, rows = [], [], []
    with open(index, encoding="utf-8") as fh:
        header = next(fh, "").rstrip("\n")
        if header != "Sequence_ID\tpart\trow":
            raise InputError(f"{index}: not a virnucpro embeddings index (header {header[:60]!r})")
        for n, line in enumerate(fh, start=2):
            cols = line.rstrip("\n").split("\t")
            if len(cols) != 3 or not cols[2].isdigit():
                raise InputError(f"{index}, line {n}: expected Sequence_ID, part, row")
            ids.append(cols[0])
            parts.append(cols[1])
            rows.append(int(cols[2]))
    return ids, parts, np.asarray(rows, dtype=np.int64)


def run_chunk_length(source: Path) -> int | None:
    """The chunk length ``source``'s run.json records (None without one)."""
    path = Path(source) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("chunk_length") if path.is_file() else None
    except (OSError, ValueError):
        raise InputError(f"{path} is not readable JSON") from None


def classify_saved(source: Path, outdir: Path, classifier: Path, chunk_length: int | None = None,
                   allow_mismatch: bool = False, device: str = "cpu") -> dict:
    """Score every frame of ``source``'s saved features with ``classifier`` and write
    prediction_results.txt and prediction_results_highestscore.csv to ``outdir``."""
    from virnucpro.models.classifier import classify, load_classifier
    t0 = time.perf_counter()
    source, outdir = Path(source), Path(outdir)
    ids, parts, rows = read_index(source)
    recorded = run_chunk_length(source)
    if chunk_length and recorded and chunk_length != recorded and not allow_mismatch:
        raise InputError(f"{source}'s features are of {recorded}-nt chunks, not {chunk_length} (a classifier "
                         f"for {chunk_length} nt would give wrong labels; --allow-classifier-mismatch to run anyway)")
    chunk_length = chunk_length or recorded
    run = json.loads((source / MANIFEST).read_text(encoding="utf-8")) if (source / MANIFEST).is_file() else {}
    model, info = load_classifier(classifier, chunk_length, allow_mismatch)
    want = model.hidden_layer.in_features
    scores = np.empty((len(ids), 2), dtype=np.float32)
    where: dict[str, list[int]] = {}
    for k, name in enumerate(parts):
        where.setdefault(name, []).append(k)
    for name, ks in where.items():
        path = source / EMBEDDINGS / name
        try:
            with np.load(path) as z:
                feats = z["features"]
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"cannot read {path} ({type(exc).__name__}: {exc})") from None
        if feats.shape[1] != want:
            raise InputError(f"{path}: features of {feats.shape[1]} values, but the classifier {classifier} "
                             f"takes {want} (made for other models?)")
        scores[ks] = classify(model, feats[rows[ks]], device)
    outdir.mkdir(parents=True, exist_ok=True)
    counts = write_predictions(outdir, ids, scores)
    synthetic = bool(run.get("synthetic"))
    summary = {**counts, "wall_s": round(time.perf_counter() - t0, 3), "source": str(source),
               "classifier": {"path": str(classifier), **info}, "chunk_length": chunk_length,
               "synthetic": synthetic, "parts": len(where)}
    write_manifest(outdir, {"command": "classify", **summary})
    return summary
