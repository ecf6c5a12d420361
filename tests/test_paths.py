"""virnucpro.io.paths: every file of an output directory named once, and the writers use those names."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from virnucpro.io import outputs, paths
from virnucpro.io.paths import Paths


def test_paths_names_the_documented_files(tmp_path) -> None:
    p = Paths(str(tmp_path))   # a str is taken too
    want = {
        "predictions": "prediction_results.txt", "consensus": "prediction_results_highestscore.csv",
        "read_summary": "read_summary.tsv", "viral_reads": "viral_reads.fa", "skipped_reads": "skipped_reads.tsv",
        "run_json": "run.json",
        "log": "virnucpro.log", "synthetic_note": "SYNTHETIC_MODELS.txt", "embeddings": "embeddings",
        "run_dir": ".virnucpro-run",
    }
    for attr, name in want.items():
        assert getattr(p, attr) == tmp_path / name, attr
    assert p.embedding_index == tmp_path / "embeddings" / "index.tsv"
    assert p.embedding_part(12) == tmp_path / "embeddings" / "part-00012.npz"
    assert p.embedding_part(12).match(paths.EMBEDDING_PART_GLOB)
    assert p.rank_log(0) == p.log and p.rank_log(3) == tmp_path / "virnucpro.rank3.log"


def test_the_other_layers_use_the_same_names() -> None:
    from virnucpro.perf import baseline, compare, gate
    from virnucpro.run import rundir
    assert rundir.RUN_DIRNAME is paths.RUN_DIRNAME
    assert gate.LOG_NAME is paths.LOG_NAME and gate.RUN_JSON is paths.RUN_JSON
    assert compare.PREDICTIONS is paths.PREDICTIONS and compare.CONSENSUS is paths.CONSENSUS
    assert baseline.MANIFEST == "manifest.json" != paths.RUN_JSON, "a baseline's own manifest is another file"
    for dup in ("FRAME_FILE", "CONSENSUS_FILE", "LOG_FILE"):
        assert not hasattr(compare, dup) and not hasattr(gate, dup), f"{dup} is defined again"


def test_writers_write_exactly_the_named_files(tmp_path) -> None:
    records = [SimpleNamespace(id="r0", seq="A" * 300), SimpleNamespace(id="r1", seq="A" * 300)]
    chunks = [SimpleNamespace(id="r0_chunk_1", read_index=0), SimpleNamespace(id="r1_chunk_1", read_index=1)]
    frames = [("r0_chunk_1F1", 0, None, None), ("r1_chunk_1R2", 1, None, None)]
    scores = np.array([[0.2, 0.8], [np.nan, np.nan]], dtype=np.float32)   # r1's unit was given up on
    outputs.OutputRows().write(tmp_path, records, chunks, frames, scores, synthetic=True)
    outputs.write_manifest(tmp_path, {"engine": "reference"})
    outputs.write_synthetic_note(tmp_path, {"preset": "tiny"})
    outputs.save_embedding_part(tmp_path, 0, np.array([0]), np.zeros((1, 4), dtype=np.float32))
    outputs.write_embedding_index(tmp_path, frames, np.array([0]))
    p = Paths(tmp_path)
    made = sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*") if f.is_file())
    want = sorted(str(f.relative_to(tmp_path)) for f in (p.predictions, p.consensus, p.read_summary, p.viral_reads,
                                                         p.skipped_reads,
                                                         p.run_json, p.synthetic_note, p.embedding_part(0),
                                                         p.embedding_index))
    assert made == want
    assert outputs.load_embeddings(tmp_path)[0] == ["r0_chunk_1F1"]
