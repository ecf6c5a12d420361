"""``virnucpro classify``: the classifier step alone, over the features a ``predict --save-embeddings``
run kept (``OUTDIR/embeddings/``): another classifier (e.g. one trained on those features) labels
the same frames in seconds, without embedding anything again. Writes the original's two files.

Reads one part at a time (~13 KB per frame in memory for the part, 8 bytes per frame for the scores).
SOURCE must hold a committed output set; OUTDIR is locked while the new set is written, and its files
appear all at once (``virnucpro.io.lock``, ``virnucpro.io.outset``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from virnucpro.errors import InputError
from virnucpro.io.lock import OutdirLock
from virnucpro.io.outputs import embedding_features, read_embedding_index, write_predictions
from virnucpro.io.outset import OutputSet, require_complete
from virnucpro.io.paths import Paths


def read_run(source: Path) -> dict:
    """``source``'s run.json ({} without one)."""
    path = Paths(source).run_json
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        raise InputError(f"{path} is not readable JSON") from None


def classify_saved(source: Path, outdir: Path, classifier: Path | None = None, models: str | None = None,
                   chunk_length: int | None = None, allow_mismatch: bool = False, device: str = "cpu") -> dict:
    """Score every frame of ``source``'s saved features with ``classifier`` (or the ``models``
    directory's one for the features' chunk length) and write prediction_results.txt and
    prediction_results_highestscore.csv to ``outdir``."""
    from virnucpro.models.classifier import classify, load_classifier
    t0 = time.perf_counter()
    source, outdir = Path(source), Path(outdir)
    if outdir.resolve() == source.resolve():
        raise InputError("classify: write to another directory than SOURCE (its run.json and predictions stay)")
    require_complete(source)
    ids, parts, rows = read_embedding_index(source)
    run = read_run(source)
    recorded = run.get("chunk_length")
    if chunk_length and recorded and chunk_length != recorded and not allow_mismatch:
        raise InputError(f"{source}'s features are of {recorded}-nt chunks, not {chunk_length} (a classifier "
                         f"for {chunk_length} nt would give wrong labels; --allow-classifier-mismatch to run anyway)")
    chunk_length = chunk_length or recorded
    if classifier is None:
        from virnucpro.models.layout import find_classifier
        if chunk_length is None:
            raise InputError("classify: give --chunk-length (SOURCE has no run.json that records it)")
        classifier = find_classifier(models, chunk_length)
    model, info = load_classifier(classifier, chunk_length, allow_mismatch)
    want = model.hidden_layer.in_features
    scores = np.empty((len(ids), 2), dtype=np.float32)
    n_parts = 0
    for ks, feats in embedding_features(source, parts, rows):
        if feats.shape[1] != want:
            raise InputError(f"{source}: features of {feats.shape[1]} values, but the classifier {classifier} "
                             f"takes {want} (made for other models?)")
        scores[ks] = classify(model, feats, device)
        n_parts += 1
    with OutdirLock.acquire(outdir):
        oset = OutputSet(outdir)
        oset.recover()
        try:
            counts = write_predictions(oset.begin(), ids, scores)
        except BaseException:
            oset.abandon()
            raise
        summary = {**counts, "wall_s": round(time.perf_counter() - t0, 3), "source": str(source),
                   "classifier": {"path": str(classifier), **info}, "chunk_length": chunk_length,
                   "synthetic": bool(run.get("synthetic")), "parts": n_parts}
        try:
            oset.commit({"command": "classify", **summary})
        except BaseException:
            oset.abandon()
            raise
    return summary
