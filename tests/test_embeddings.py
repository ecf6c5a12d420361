"""--save-embeddings: each kept frame's classifier input written beside the predictions, in parts
made while the engines work, indexed in prediction order; the features are the ones the scores came
from, the same from either engine and any worker count, and never outlive the run they belong to."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from virnucpro.outputs import EMBEDDINGS, load_embeddings, save_embedding_part, write_embedding_index

FAST = ["--engine", "fast", "--device", "cpu", "--no-progress", "--precision", "fp32",
        "--token-budget", "1024", "--batches-per-unit", "2"]
RUNS = {
    "reference": ["--engine", "reference", "--device", "cpu", "--no-progress", "--block-frames", "100"],
    "fast": FAST,
    "fast-2-workers": [*FAST, "--workers", "2"],
}


@pytest.fixture(scope="module")
def reads(tmp_path_factory) -> Path:
    from virnucpro.workloads.reads import write_reads_fasta
    path = tmp_path_factory.mktemp("embedding_reads") / "reads.fa"
    write_reads_fasta(path, 300, seed=5)
    return path


@pytest.fixture(scope="module")
def saved(reads, tiny_models, tmp_path_factory, run_cli) -> dict[str, Path]:
    out = {}
    for name, args in RUNS.items():
        d = tmp_path_factory.mktemp("embeddings") / name
        res = run_cli("predict", reads, "-o", d, "--models", tiny_models, *args, "--save-embeddings")
        assert res.code == 0, str(res)
        out[name] = d
    return out


def predictions(outdir: Path) -> pd.DataFrame:
    return pd.read_csv(outdir / "prediction_results.txt", sep="\t", dtype={"score1": np.float32, "score2": np.float32})


@pytest.mark.parametrize("name", list(RUNS))
def test_saved_features_give_the_written_scores(saved, tiny_models, name):
    from virnucpro.models import layout
    from virnucpro.models.classifier import classify, load_classifier
    out = saved[name]
    ids, feats = load_embeddings(out)
    rows = predictions(out)
    assert ids == rows["Sequence_ID"].tolist(), "index.tsv must list the frames in prediction_results.txt order"
    n_parts = len(list((out / EMBEDDINGS).glob("part-*.npz")))
    assert n_parts > 1, f"{name}: expected several parts (units or blocks), saw {n_parts}"
    clf, _ = load_classifier(layout.resolve(tiny_models, 300).classifier, 300)
    scores = classify(clf, feats, "cpu")
    worst = float(np.abs(scores[:, 1] - rows["score2"].to_numpy()).max())
    assert worst <= 1e-6, f"{name}: the classifier on the saved features should give the written score2; max |d| {worst:.2e}"


def test_both_engines_and_any_worker_count_save_the_same_features(saved):
    ids_ref, ref = load_embeddings(saved["reference"])
    ids_one, one = load_embeddings(saved["fast"])
    ids_two, two = load_embeddings(saved["fast-2-workers"])
    assert ids_ref == ids_one == ids_two
    assert np.array_equal(one, two), "the worker count must not change a frame's features"
    worst = float(np.abs(one - ref).max())
    assert worst <= 1e-4, f"fp32 fast engine vs reference features: max |d| {worst:.2e} (expected <= 1e-4)"


def test_a_run_without_the_flag_removes_an_earlier_runs_embeddings(saved, reads, tiny_models, tmp_path, run_cli):
    import shutil
    out = tmp_path / "again"
    shutil.copytree(saved["reference"], out)
    (out / EMBEDDINGS / "notes.txt").write_text("mine")
    res = run_cli("predict", reads, "-o", out, "--models", tiny_models, *RUNS["reference"])
    assert res.code == 0, str(res)
    left = sorted(p.name for p in (out / EMBEDDINGS).iterdir())
    assert left == ["notes.txt"], f"stale parts or index left beside the new predictions: {left}"


def test_a_resumed_run_keeps_its_parts_and_drops_temp_files(tmp_path):
    from virnucpro.outputs import clear_embeddings
    part = save_embedding_part(tmp_path, 2, np.array([0]), np.ones((1, 4)))
    tmp = part.parent / ".part-00003.npz.abc.tmp"     # a part being written when the run was killed
    tmp.write_bytes(b"half")
    clear_embeddings(tmp_path, resume=True)
    assert part.exists() and not tmp.exists()
    clear_embeddings(tmp_path)
    assert not part.parent.exists(), "a fresh run leaves no earlier part (and no empty folder)"


def test_the_index_refuses_frames_without_features(tmp_path):
    from virnucpro.errors import VirnucproError
    frames = [(f"r{i}_chunk_1F1", i, "ACG", "M") for i in range(5)]
    save_embedding_part(tmp_path, 0, np.array([0, 1, 2]), np.ones((3, 4)))
    save_embedding_part(tmp_path, 3, np.array([4]), np.ones((1, 4)))
    with pytest.raises(VirnucproError, match=r"1 frames have no features.*r3_chunk_1F1"):
        write_embedding_index(tmp_path, frames, np.arange(5))
    info = write_embedding_index(tmp_path, frames, np.array([0, 1, 2, 4]))   # frame 3 skipped: no score
    assert info["parts"] == 2 and info["frames"] == 4
    ids, feats = load_embeddings(tmp_path)
    assert ids == ["r0_chunk_1F1", "r1_chunk_1F1", "r2_chunk_1F1", "r4_chunk_1F1"] and feats.shape == (4, 4)
