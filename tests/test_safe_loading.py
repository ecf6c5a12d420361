"""Model files are read without running them (issue 16 items 7 and 9).

A ``__reduce__`` payload planted in any pickled model file (ESM-2 checkpoint, its contact-regression
file, DNABERT-S pytorch_model.bin, classifier .pth) is refused with one line and exit 2 by both
engines, even with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (which made fair-esm's own loader unpickle
plainly and run it); bogus safetensors headers are one line and exit 2, not "internal error".
"""

from __future__ import annotations

import collections
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch

from virnucpro.errors import ModelError
from virnucpro.models import safeload

ESM = "esm2_t2_tiny_synthetic.pt"
REG = "esm2_t2_tiny_synthetic-contact-regression.pt"


class _Payload:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(models: Path, which: str, marker: Path) -> Path:
    """Put a payload into one model file of the model set copy ``models``; returns that file."""
    if which in ("esm_checkpoint", "contact_regression"):
        path = models / (ESM if which == "esm_checkpoint" else REG)
        data = safeload.load_pickled(path, [__import__("argparse").Namespace])
        data["model"]["zz_payload"] = _Payload(marker)
        torch.save(data, path)
    elif which == "dnabert_bin":
        state, _ = safeload.load_safetensors(models / "DNABERT-S" / "model.safetensors")
        (models / "DNABERT-S" / "model.safetensors").unlink()
        path = models / "DNABERT-S" / "pytorch_model.bin"
        torch.save({**state, "zz_payload": _Payload(marker)}, path)
    else:   # the classifier, in the original's whole-module layout, with one more attribute
        from virnucpro.models.classifier import load_classifier, save_classifier_pickle
        path = models / "300_model.pth"
        model, _ = load_classifier(path, 300)
        model.zz_payload = _Payload(marker)
        save_classifier_pickle(model, path)
    return path


def _error_line(res) -> str:
    """Exit 2, no traceback, exactly one line on stderr besides warnings (a tiny set warns SYNTHETIC)."""
    lines = [ln for ln in res.err.splitlines() if ln.strip() and not ln.startswith("virnucpro: WARNING")]
    assert res.code == 2 and len(lines) == 1 and "Traceback" not in res.err, f"expected one line and exit 2:\n{res}"
    assert lines[0].startswith("virnucpro: error:"), lines[0]
    return lines[0]


def _fasta(tmp_path: Path) -> Path:
    p = tmp_path / "reads.fa"
    p.write_text(">r1\n" + "GCC" * 50 + "\n>r2\n" + "ACGT" * 40 + "\n")
    return p


def test_the_variable_does_make_plain_torch_load_run_a_payload(tmp_path, monkeypatch):
    """The threat is real: torch.load without weights_only (fair-esm's call) runs the payload
    under TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1; our loader, given the same file, refuses it."""
    marker = tmp_path / "RAN"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "zz": _Payload(marker)}, evil)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(ModelError, match="posix.system|os.system|nothing from the file was executed"):
        safeload.load_pickled(evil, what="test file")
    assert not marker.exists(), "our weights-only loader ran the payload"
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.load(evil)
    assert marker.exists(), "control: plain torch.load under the variable should have run the payload"


@pytest.mark.parametrize("mmap", [False, True])
def test_loader_refuses_a_payload_in_a_legacy_file_and_reads_a_clean_one(tmp_path, monkeypatch, mmap):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "RAN"
    legacy = tmp_path / "legacy.pt"
    torch.save({"a": _Payload(marker)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ModelError, match="legacy.pt"):
        safeload.load_pickled(legacy, mmap=mmap)
    assert not marker.exists()
    clean = tmp_path / "clean.pt"
    torch.save({"w": torch.arange(5.0)}, clean)
    assert torch.equal(safeload.load_pickled(clean, mmap=mmap)["w"], torch.arange(5.0))


@pytest.mark.parametrize("engine", ["reference", "fast"])
@pytest.mark.parametrize("which", ["esm_checkpoint", "contact_regression", "dnabert_bin", "classifier"])
def test_planted_payload_is_refused_by_each_engine(which, engine, tmp_path, tiny_models, run_cli, monkeypatch):
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    marker = tmp_path / "PWNED"
    evil = _plant(models, which, marker)
    out = tmp_path / "out"
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    res = run_cli("predict", _fasta(tmp_path), "-o", out, "--models", models, "--device", "cpu",
                  "--engine", engine, "--no-progress")
    assert not marker.exists(), f"the payload in {evil.name} was EXECUTED by the {engine} engine"
    line = _error_line(res)
    assert evil.name in line and "refusing" in line and "nothing from the file was executed" in line, line


SAFETENSORS_BOGUS = {
    "garbage_json": struct.pack("<Q", 10) + b"garbage!!!",
    "huge_length": struct.pack("<Q", 2 ** 62) + b"{}",
    "empty": b"",
    "truncated_data": None,   # a real file cut in half
}


@pytest.mark.parametrize("target", ["DNABERT-S/model.safetensors", "300_model.safetensors"])
@pytest.mark.parametrize("case", sorted(SAFETENSORS_BOGUS))
def test_bogus_safetensors_is_one_line_exit_2(case, target, tmp_path, tiny_models, run_cli):
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    path = models / target
    if SAFETENSORS_BOGUS[case] is None:
        os.truncate(path, path.stat().st_size // 2)
    else:
        path.write_bytes(SAFETENSORS_BOGUS[case])
    extra = ["--classifier", path] if target.startswith("300") else []
    out = tmp_path / "out"
    res = run_cli("predict", _fasta(tmp_path), "-o", out, "--models", models, "--device", "cpu", "--no-progress",
                  *extra)
    assert str(path) in _error_line(res)


def test_safetensors_header_check_accepts_real_files(tiny_models):
    header = safeload.safetensors_header(tiny_models / "DNABERT-S" / "model.safetensors")
    assert any(k != "__metadata__" for k in header)
    state, meta = safeload.load_safetensors(tiny_models / "300_model.safetensors")
    assert meta.get("chunk_length") == "300" and "hidden_layer.weight" in state


def test_loads_with_different_allow_lists_in_parallel_threads_do_not_disturb_each_other(tmp_path):
    """torch's allow-list (``safe_globals``) is process-wide: the fast engine loads ESM-2 (allowing
    argparse.Namespace) in a thread while the main thread loads the classifier (its own classes). Each
    load must see exactly its own allow-list, whichever thread enters or leaves first (the gate saw an
    ESM-2 checkpoint refused once)."""
    import argparse
    import threading

    import torch

    from virnucpro.models.safeload import load_pickled

    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save({"args": argparse.Namespace(x=1), "w": torch.zeros(2)}, a)
    torch.save({"od": collections.OrderedDict(k=torch.ones(1)), "n": argparse.Namespace(y=2)}, b)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def loop(path, allowed) -> None:
        start.wait()
        try:
            for _ in range(150):
                load_pickled(path, allowed)
        except BaseException as exc:   # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(a, [argparse.Namespace])),
               threading.Thread(target=loop, args=(b, [argparse.Namespace, collections.OrderedDict]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, f"a load was refused while another thread loaded: {errors[0]}"
