"""`virnucpro models download` against a local HTTP server, and `virnucpro models check` on damaged
sets (issue 18 items 1-2).

The server (http.server on 127.0.0.1, in a thread) serves a mirror made from the tiny synthetic set
under the real file names, honours Range, and can be told to cut a transfer short or to ignore
Range. The download catalogue is pointed at the tiny files' own hashes (the real ones are the
published models').
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

from virnucpro.models import download, fetch, verify

ESM = "esm2_t36_3B_UR50D.pt"
REG = "esm2_t36_3B_UR50D-contact-regression.pt"


@dataclass
class Mirror:
    root: Path
    cut: dict = field(default_factory=dict)       # rel path -> [bytes sent before closing, times left]
    ignore_range: bool = False
    requests: list = field(default_factory=list)  # (rel path, Range header or None)

    def serve(self):
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):   # quiet
                pass

            def do_GET(self):
                rel = unquote(self.path.lstrip("/"))
                rng = self.headers.get("Range")
                mirror.requests.append((rel, rng))
                path = mirror.root / rel
                if not path.is_file():
                    self.send_error(404, "Not Found")
                    return
                data = path.read_bytes()
                start = 0
                m = re.match(r"bytes=(\d+)-$", rng or "")
                if m and not mirror.ignore_range:
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                cut = mirror.cut.get(rel)
                if cut and cut[1] > 0:
                    cut[1] -= 1
                    self.wfile.write(body[:cut[0]])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def mirror(tmp_path, tiny_models, monkeypatch):
    """A mirror of the tiny set under the real names; the catalogue points at its files' hashes."""
    import torch
    from virnucpro.models.safeload import load_safetensors
    root = tmp_path / "mirror"
    (root / "DNABERT-S").mkdir(parents=True)
    shutil.copy(tiny_models / "esm2_t2_tiny_synthetic.pt", root / ESM)
    shutil.copy(tiny_models / "esm2_t2_tiny_synthetic-contact-regression.pt", root / REG)
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(tiny_models / "DNABERT-S" / name, root / "DNABERT-S" / name)
    torch.save(load_safetensors(tiny_models / "DNABERT-S" / "model.safetensors")[0],
               root / "DNABERT-S" / "pytorch_model.bin")
    for c in (300, 500):
        shutil.copy(tiny_models / f"{c}_model.pth", root / f"{c}_model.pth")
    real = download.catalogue()
    hashes = {"DNABERT-S/pytorch_model.bin": _sha(root / "DNABERT-S" / "pytorch_model.bin")}  # a published one
    monkeypatch.setattr(download, "catalogue", lambda: [
        download.Remote(r.group, r.rel, r.url, hashes.get(r.rel), None, r.approx) for r in real])
    monkeypatch.setattr(fetch, "RETRY_PAUSE_S", 0.0)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    m = Mirror(root)
    server = m.serve()
    m.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield m
    server.shutdown()
    server.server_close()


def _download(run_cli, to, url, *extra):
    return run_cli("models", "download", "--to", to, "--base-url", url, "--no-progress", "--timeout", "10", *extra)


def _error_line(res, code: int) -> str:
    lines = [ln for ln in res.err.splitlines() if ln.strip() and not ln.startswith("virnucpro: WARNING")]
    assert res.code == code and len(lines) == 1 and "Traceback" not in res.err, f"expected one line, exit {code}:\n{res}"
    assert lines[0].startswith("virnucpro: error:"), lines[0]
    return lines[0]


def test_catalogue_names_the_published_sources():
    urls = {r.rel: r.url for r in download.catalogue()}
    assert urls[ESM] == "https://dl.fbaipublicfiles.com/fair-esm/models/esm2_t36_3B_UR50D.pt"
    assert urls[REG] == ("https://dl.fbaipublicfiles.com/fair-esm/regression/"
                         "esm2_t36_3B_UR50D-contact-regression.pt")
    assert urls["DNABERT-S/pytorch_model.bin"].startswith("https://huggingface.co/zhihan1996/DNABERT-S/resolve/")
    assert re.fullmatch(r"https://raw\.githubusercontent\.com/Li-Jing-1997/VirNucPro/[0-9a-f]{40}/300_model\.pth",
                        urls["300_model.pth"])


def test_clean_download_then_check_then_nothing_again(mirror, tmp_path, run_cli):
    to = tmp_path / "models"
    res = _download(run_cli, to, mirror.url)
    assert res.code == 0, str(res)
    served = sorted(str(p.relative_to(mirror.root)) for p in mirror.root.rglob("*") if p.is_file())
    for rel in served:
        assert (to / rel).read_bytes() == (mirror.root / rel).read_bytes(), rel
    assert not list(to.rglob("*.part")), "a .part file was left behind"
    record = verify.read_record(to)
    assert sorted(record) == served and all(record[r]["sha256"] == _sha(to / r) for r in served)
    chk = run_cli("models", "check", "--models", to)
    assert chk.code == 0 and chk.out.count("matches the download record") == 6, str(chk)
    n = len(mirror.requests)
    again = _download(run_cli, to, mirror.url)
    assert again.code == 0 and len(mirror.requests) == n and "already there" in again.out, str(again)


def test_interrupted_transfer_resumes_with_range(mirror, tmp_path, run_cli):
    size = (mirror.root / ESM).stat().st_size
    mirror.cut[ESM] = [size // 3, 1]                  # the first transfer stops a third of the way
    to = tmp_path / "models"
    res = _download(run_cli, to, mirror.url, "--only", "esm2")
    assert res.code == 0, str(res)
    asked = [rng for rel, rng in mirror.requests if rel == ESM]
    assert asked == [None, f"bytes={size // 3}-"], asked
    assert (to / ESM).read_bytes() == (mirror.root / ESM).read_bytes()


def test_a_transfer_that_keeps_breaking_stops_and_the_next_run_resumes(mirror, tmp_path, run_cli):
    size = (mirror.root / ESM).stat().st_size
    mirror.cut[ESM] = [size // 4, 4]                  # four cuts: the first run gives up (1 + 3 resumes)
    to = tmp_path / "models"
    line = _error_line(_download(run_cli, to, mirror.url, "--only", "esm2"), code=3)
    assert ".part" in line and "again" in line, line
    assert not (to / ESM).exists()
    kept = (to / (ESM + ".part")).stat().st_size
    assert kept == 4 * (size // 4) or kept == size, kept   # each cut kept what had come
    mirror.requests.clear()
    res = _download(run_cli, to, mirror.url, "--only", "esm2")
    assert res.code == 0, str(res)
    assert [rng for rel, rng in mirror.requests if rel == ESM] == [f"bytes={kept}-"]
    assert (to / ESM).read_bytes() == (mirror.root / ESM).read_bytes()


def test_a_server_that_ignores_range_is_read_from_the_start(mirror, tmp_path):
    to = tmp_path / "models"
    (to).mkdir()
    (to / (ESM + ".part")).write_bytes(b"stale bytes of something else")
    mirror.ignore_range = True
    got = fetch.fetch(f"{mirror.url}/{ESM}", to / ESM)
    assert got.sha256 == _sha(mirror.root / ESM) and (to / ESM).read_bytes() == (mirror.root / ESM).read_bytes()


def test_a_whole_part_file_is_checked_and_renamed_without_a_transfer(mirror, tmp_path):
    """Killed after the last byte but before the rename: the server answers 416 to the Range request."""
    to = tmp_path / "models"
    to.mkdir()
    shutil.copy(mirror.root / ESM, to / (ESM + ".part"))
    got = fetch.fetch(f"{mirror.url}/{ESM}", to / ESM, sha256=_sha(mirror.root / ESM))
    assert got.resumed_from == got.size and (to / ESM).read_bytes() == (mirror.root / ESM).read_bytes()
    assert not (to / (ESM + ".part")).exists()


def test_wrong_hash_is_refused_and_not_left_in_place(mirror, tmp_path, run_cli, monkeypatch):
    wrong = [download.Remote(r.group, r.rel, r.url, "0" * 64 if r.rel == "300_model.pth" else r.sha256)
             for r in download.catalogue()]
    monkeypatch.setattr(download, "catalogue", lambda: wrong)
    to = tmp_path / "models"
    line = _error_line(_download(run_cli, to, mirror.url, "--only", "classifiers"), code=2)
    assert "300_model.pth" in line and "sha256" in line and "0" * 64 in line, line
    assert not (to / "300_model.pth").exists() and not (to / "300_model.pth.part").exists()


def test_a_404_is_named(mirror, tmp_path, run_cli):
    (mirror.root / "500_model.pth").unlink()
    line = _error_line(_download(run_cli, tmp_path / "models", mirror.url, "--only", "classifiers"), code=2)
    assert f"{mirror.url}/500_model.pth" in line and "404" in line, line


def test_offline_is_one_line_exit_3(tmp_path, run_cli, monkeypatch):
    monkeypatch.setattr(fetch, "RETRY_PAUSE_S", 0.0)
    with socket.socket() as s:        # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = _error_line(_download(run_cli, tmp_path / "models", f"http://127.0.0.1:{port}"), code=3)
    assert "cannot reach" in line and f"127.0.0.1:{port}" in line, line


def test_a_file_that_does_not_load_is_removed(mirror, tmp_path, run_cli):
    evil = mirror.root / "300_model.pth"     # no published hash: loading is the check
    evil.write_bytes(evil.read_bytes()[: evil.stat().st_size // 2])
    to = tmp_path / "models"
    line = _error_line(_download(run_cli, to, mirror.url, "--only", "classifiers"), code=2)
    assert "300_model.pth" in line and "removed" in line, line
    assert not (to / "300_model.pth").exists() and "300_model.pth" not in verify.read_record(to)


# --------------------------------------------------------------------------- models check

CHECKED = ["esm2_t2_tiny_synthetic.pt", "esm2_t2_tiny_synthetic-contact-regression.pt", "DNABERT-S/config.json",
           "DNABERT-S/tokenizer.json", "DNABERT-S/model.safetensors", "300_model.pth"]


@pytest.mark.parametrize("victim", CHECKED)
def test_check_fails_on_a_truncated_file_and_names_it(victim, tmp_path, tiny_models, run_cli):
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    os.truncate(models / victim, (models / victim).stat().st_size // 2)
    res = run_cli("models", "check", "--models", models)
    line = _error_line(res, code=2)
    assert str(models / victim) in line, line
    assert sum(ln.startswith("BAD") for ln in res.out.splitlines()) == 1, res.out


def test_check_fails_on_a_flipped_byte_in_a_checkpoint(tmp_path, tiny_models, run_cli):
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    ckpt = models / "esm2_t2_tiny_synthetic.pt"
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    assert str(ckpt) in _error_line(run_cli("models", "check", "--models", models), code=2)


def test_check_compares_with_the_download_record(mirror, tmp_path, run_cli):
    to = tmp_path / "models"
    assert _download(run_cli, to, mirror.url).code == 0
    cfg = to / "DNABERT-S" / "config.json"
    cfg.write_text(cfg.read_text().replace("}", " }", 1))    # still valid JSON, not the downloaded bytes
    line = _error_line(run_cli("models", "check", "--models", to), code=2)
    assert str(cfg) in line and "downloaded" in line, line


def test_download_help_tells_sources_sizes_and_exit_codes(run_cli):
    res = run_cli("models", "download", "--help")
    assert res.code == 0, str(res)
    for needle in ("--outdir", "--base-url", "--only", "5.7 GB", "zhihan1996/DNABERT-S", "Li-Jing-1997/VirNucPro",
                   "Exit codes", "3 network"):
        assert needle in res.out, f"`models download --help` lacks {needle!r}"
