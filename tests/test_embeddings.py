"""--save-embeddings: each kept frame's classifier input written beside the predictions, in parts
made while the engines work, indexed in prediction order; the features are the ones the scores came
from, the same from either engine and any worker count, and never outlive the run they belong to."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from virnucpro.io.outputs import load_embeddings, save_embedding_part, write_embedding_index
from virnucpro.io.paths import EMBEDDINGS

FAST = ["--engine", "fast", "--device", "cpu", "--no-progress", "--precision", "fp32",
        "--token-budget", "1024", "--batches-per-unit", "2"]
RUNS = {
    "reference": ["--engine", "reference", "--device", "cpu", "--no-progress", "--block-frames", "100"],
    "fast": FAST,
    "fast-2-workers": [*FAST, "--workers", "2"],
}


@pytest.fixture(scope="module")
def reads(synthetic_reads) -> Path:
    return synthetic_reads(300, 5)


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


def test_a_forced_run_without_the_flag_removes_an_earlier_runs_embeddings(saved, reads, tiny_models, tmp_path, run_cli):
    import shutil
    out = tmp_path / "again"
    shutil.copytree(saved["reference"], out)
    (out / EMBEDDINGS / "notes.txt").write_text("mine")
    res = run_cli("predict", reads, "-o", out, "--models", tiny_models, *RUNS["reference"], "--force")
    assert res.code == 0, str(res)
    left = sorted(p.name for p in (out / EMBEDDINGS).iterdir())
    assert left == ["notes.txt"], f"stale parts or index left beside the new predictions: {left}"


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_resume_recomputes_a_finished_unit_whose_part_is_gone(saved, reads, tiny_models, tmp_path, run_cli, damage):
    """A checkpointed unit without a readable part (deleted to free space, cut by a crash, or cleared by
    a reference run into the same folder) is computed again by --resume, not a dead end at the index."""
    import shutil
    from virnucpro.core.telemetry import read_telemetry
    out = tmp_path / "resumed"
    shutil.copytree(saved["fast"], out)
    part = out / EMBEDDINGS / "part-00001.npz"
    if damage == "deleted":
        part.unlink()
    else:
        part.write_bytes(part.read_bytes()[:100])
    res = run_cli("predict", reads, "-o", out, "--models", tiny_models, *FAST, "--save-embeddings", "--resume")
    assert res.code == 0, str(res)
    events = read_telemetry(out / "virnucpro.log")
    last = events[max(i for i, e in enumerate(events) if e["event"] == "run_start"):]
    redone = sorted(e["unit"] for e in last if e["event"] == "unit_done")
    assert redone == [1], f"expected only unit 1 computed again, saw {redone}"
    ids, feats = load_embeddings(out)
    ids0, feats0 = load_embeddings(saved["fast"])
    assert ids == ids0 and np.array_equal(feats, feats0)


def test_a_resumed_run_keeps_its_parts_and_drops_temp_files(tmp_path):
    from virnucpro.io.outputs import clear_embeddings
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


# ------------------------------------------------------------------ virnucpro classify (saved features)

@pytest.mark.parametrize("name", ["reference", "fast-2-workers"])
def test_classify_with_the_same_classifier_rewrites_the_same_predictions(saved, tiny_models, tmp_path, run_cli, name):
    out = tmp_path / "again"
    res = run_cli("classify", saved[name], "-o", out, "--models", tiny_models)
    assert res.code == 0, str(res)
    for f in ("prediction_results.txt", "prediction_results_highestscore.csv"):
        mine, theirs = (out / f).read_text(), (saved[name] / f).read_text()
        if name == "reference":   # the same classify() batches as the run's: the same bytes
            assert mine == theirs, f"{f} differs from the predict run's"
    got, want = predictions(out), predictions(saved[name])
    assert got["Sequence_ID"].tolist() == want["Sequence_ID"].tolist()
    assert (got["Prediction"] == want["Prediction"]).mean() == 1.0
    worst = float((got["score2"] - want["score2"]).abs().max())
    assert worst <= 1e-6, f"score2 max |d| {worst:.2e}"


def test_classify_with_another_classifier_labels_from_the_features(saved, tiny_models, tmp_path, run_cli):
    """The 500-nt classifier on 300-nt features is refused unless allowed; allowed, its labels are
    its own (not a copy of the run's)."""
    refused = run_cli("classify", saved["reference"], "-o", tmp_path / "x", "--models", tiny_models, "-c", "500")
    assert refused.code == 2 and "300-nt chunks, not 500" in refused.err, str(refused)
    res = run_cli("classify", saved["reference"], "-o", tmp_path / "y", "--classifier",
                  tiny_models / "500_model.pth", "--allow-classifier-mismatch")
    assert res.code == 0, str(res)
    from virnucpro.models.classifier import classify, load_classifier
    clf, _ = load_classifier(tiny_models / "500_model.pth", 500)
    _, feats = load_embeddings(saved["reference"])
    want = classify(clf, feats, "cpu")
    got = predictions(tmp_path / "y")
    assert np.abs(got["score2"].to_numpy() - want[:, 1]).max() <= 1e-6
    assert not np.array_equal(got["score2"].to_numpy(), predictions(saved["reference"])["score2"].to_numpy())


@pytest.mark.parametrize("case, words", [
    ("no-embeddings", "has no embeddings/index.tsv"),
    ("into-source", "another directory than SOURCE"),
    ("damaged-index", "not a virnucpro embeddings index"),
])
def test_classify_refuses_with_one_line(saved, tiny_models, tmp_path, run_cli, case, words):
    import shutil
    src = tmp_path / "src"
    shutil.copytree(saved["reference"], src)
    out = tmp_path / "out"
    if case == "no-embeddings":
        shutil.rmtree(src / EMBEDDINGS)
    elif case == "into-source":
        out = src
    else:
        (src / EMBEDDINGS / "index.tsv").write_text("id\tscore\n")
    res = run_cli("classify", src, "-o", out, "--models", tiny_models)
    assert res.code == 2, str(res)
    assert words in res.err and "Traceback" not in res.err and len(res.err_lines()) == 1, str(res)
