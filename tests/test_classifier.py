"""Classifier loading: the original pickle layout without running code from the file."""

import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from virnucpro.errors import ModelError
from virnucpro.models.classifier import (MLPClassifier, classify, labels_from_scores, load_classifier,
                                         save_classifier_pickle, save_classifier_safetensors)


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = MLPClassifier()
    with torch.no_grad():
        m.bn1.running_mean.normal_()
        m.bn1.running_var.uniform_(0.5, 2.0)
    return m.eval()


def test_pickle_in_original_layout_references_main_mlpclassifier(tmp_path, model):
    p = tmp_path / "300_model.pth"
    save_classifier_pickle(model, p)
    with zipfile.ZipFile(p) as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert b"__main__" in pkl and b"MLPClassifier" in pkl
    for child in (b"hidden_layer", b"bn1", b"output_layer", b"dropout"):
        assert child in pkl


@pytest.mark.parametrize("name", ["300_model.pth", "300_model.safetensors"])
def test_roundtrip_gives_identical_scores(tmp_path, model, name):
    p = tmp_path / name
    if name.endswith(".pth"):
        save_classifier_pickle(model, p)
    else:
        save_classifier_safetensors(model, p, 300)
    loaded, info = load_classifier(p, chunk_length=300)
    x = torch.randn(64, 3328)
    np.testing.assert_allclose(classify(loaded, x), torch.softmax(model(x), 1).detach().numpy(), atol=1e-6)
    assert info["chunk_length"] == 300


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "PWNED"
    _Evil.marker = marker
    p = tmp_path / "300_model.pth"
    torch.save({"x": _Evil()}, p)
    with pytest.raises(ModelError, match="refusing to load classifier"):
        load_classifier(p)
    assert not marker.exists(), "code from the file was executed"


def test_plain_pickle_file_is_refused(tmp_path):
    p = tmp_path / "300_model.pth"
    p.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(ModelError):
        load_classifier(p)


def test_chunk_length_mismatch_refused_unless_allowed(tmp_path, model):
    p = tmp_path / "500_model.pth"
    save_classifier_pickle(model, p)
    with pytest.raises(ModelError, match="500-nt chunks.*--chunk-length 300"):
        load_classifier(p, chunk_length=300)
    m, _ = load_classifier(p, chunk_length=300, allow_mismatch=True)
    assert isinstance(m, MLPClassifier)


def test_safetensors_metadata_chunk_length_wins_over_name(tmp_path, model):
    p = tmp_path / "classifier.safetensors"
    save_classifier_safetensors(model, p, 500)
    with pytest.raises(ModelError, match="500-nt"):
        load_classifier(p, chunk_length=300)


def test_wrong_layout_refused(tmp_path):
    p = tmp_path / "300_model.pth"
    torch.save({"hidden_layer.weight": torch.zeros(3, 3)}, p)
    with pytest.raises(ModelError, match="layout"):
        load_classifier(p)


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_classifier(tmp_path / "300_model.pth")


def test_labels_tie_goes_to_others():
    s = np.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]], dtype=np.float32)
    assert labels_from_scores(s) == ["others", "virus", "others"]
