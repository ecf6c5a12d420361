"""The *-outliers presets: planted residual channels and heavy-tailed weight rows are there, the
base presets are unchanged, and the packed model still computes fair-esm's arithmetic on them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from virnucpro.models import esm2
from virnucpro.models.esm2_outliers import OutlierSpec, planted_channels, planted_ratio
from virnucpro.models.esm2_fast import PackedESM2, tokenize

AAS = np.array(list("ACDEFGHIKLMNPQRSTVWY"))


def proteins(n=16, seed=3):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(AAS, int(rng.integers(20, 150)))) for _ in range(n)]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = {}
    for preset in ("tiny", "tiny-outliers"):
        d = tmp_path_factory.mktemp(preset)
        out[preset] = esm2.write_synthetic_esm2(d, preset, 0, {"synthetic": True, "preset": preset})
    return out


def residuals(path):
    """The residual stream after each layer but the last (real tokens only) and the fair-esm model."""
    model, alphabet, _ = esm2.load_esm2(path)
    _, _, toks = alphabet.get_batch_converter()([(str(i), p) for i, p in enumerate(proteins())])
    real = toks != alphabet.padding_idx
    with torch.no_grad():
        reps = model(toks, repr_layers=list(range(model.num_layers + 1)))["representations"]
    return [reps[i][real] for i in range(1, model.num_layers)] + [reps[0][real]], model, alphabet


def test_planted_channels_dominate_the_residual_stream(written):
    planted, _ = planted_channels(64, OutlierSpec(), 0)
    for stream in residuals(written["tiny-outliers"])[0]:
        ratio, order = planted_ratio(stream)
        assert ratio >= 20, f"largest channel only {ratio:.1f}x the median channel"
        assert sorted(order[:len(planted)]) == planted        # the largest channels are the planted ones
    for stream in residuals(written["tiny"])[0]:
        assert planted_ratio(stream)[0] < 3                    # random weights: no outlier channel


def test_heavy_tailed_rows_are_planted():
    """At a realistic width (1024 values a row) the planted t(3) rows reach several times further
    than a Gaussian row; the weights' standard deviation stays the preset's."""
    from virnucpro.models.esm2_outliers import plant
    g = torch.Generator().manual_seed(0)
    shapes = esm2._state_shapes(1, 1024, 16)
    sd = {k: (torch.randn(shape, generator=g) * 0.02) for k, (shape, _) in shapes.items()}
    plain = sd["layers.0.fc1.weight"].clone()
    plant(sd, 1, OutlierSpec(), seed=0)
    w = sd["layers.0.fc1.weight"]                                   # [4096, 1024]
    changed = (w != plain).any(1)
    assert changed.sum() == round(0.01 * 4096)                      # 1% of the rows
    peak = w.abs().max(1).values / 0.02                             # a row's largest |w| in standard deviations
    assert peak[changed].median() > 2 * peak[~changed].median(), (peak[changed].median(), peak[~changed].median())
    assert abs(float(w.std()) - 0.02) < 0.002


def test_the_marker_records_what_was_planted_and_the_base_is_unchanged(written, tmp_path):
    marker = json.loads(written["tiny-outliers"].with_name(written["tiny-outliers"].stem + ".synthetic.json").read_text())
    assert marker["outliers"]["channels"] == planted_channels(64, OutlierSpec(), 0)[0]
    again = esm2.write_synthetic_esm2(tmp_path, "tiny", 0, {"synthetic": True, "preset": "tiny"})
    assert again.read_bytes() == written["tiny"].read_bytes()    # the base preset's bytes do not move


def test_packed_model_equals_fair_esm_on_outlier_weights(written):
    _, fair, alphabet = residuals(written["tiny-outliers"])
    packed, _ = PackedESM2.from_checkpoint(written["tiny-outliers"])
    packed.force_padded_attention = True
    prots = proteins()
    tok, cu, pos, mx = tokenize(alphabet, prots)
    with torch.inference_mode():
        cu_t = torch.from_numpy(cu)
        got = PackedESM2.mean_residues(packed(torch.from_numpy(tok).long(), cu_t, torch.from_numpy(pos).long(), mx),
                                       cu_t).numpy()
    want = esm2.embed_reference(fair, alphabet, prots)
    assert np.abs(got - want).max() <= 1e-4


def test_models_synth_writes_an_outlier_set(tmp_path):
    from virnucpro.models.synth import synth
    marker = synth(tmp_path, "tiny-outliers", seed=1, calibration_frames=64)
    assert marker["preset"] == "tiny-outliers"
    assert (tmp_path / "esm2_t2_tiny_synthetic.pt").is_file() and (tmp_path / "DNABERT-S" / "config.json").is_file()
    assert 0.2 < marker["calibration"]["300"]["virus_share"] < 0.8   # the classifier is still calibrated
