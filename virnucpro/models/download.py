"""`virnucpro models download`: the real models from their publishers (or a mirror), checked.

Into MODELS_DIR (layout.py's layout, so ``--models DIR`` finds them as they land):

    esm2_t36_3B_UR50D.pt                     fair-esm's URL (esm/pretrained.py)           ~5.7 GB
    esm2_t36_3B_UR50D-contact-regression.pt  fair-esm's URL                               a few KB
    DNABERT-S/config.json, pytorch_model.bin, tokenizer.json
                                             Hugging Face zhihan1996/DNABERT-S             ~470 MB
    300_model.pth  500_model.pth             GitHub Li-Jing-1997/VirNucPro at a commit     ~7 MB each

Each file: a resumable, atomic transfer (virnucpro.models.fetch), its size checked, its sha256 checked
where the publisher lists one (Hugging Face's LFS record of pytorch_model.bin; fair-esm and the
VirNucPro repository publish none). Then every group is loaded as a run loads it -- weights-only,
zip CRCs checked -- and a file that does not load is removed. What was fetched, its size and sha256
are recorded in MODELS_DIR/virnucpro-models.json, which `virnucpro models check` verifies later.

``--base-url URL`` fetches every file from URL/<path in MODELS_DIR> instead (an institutional mirror
holding the same layout). Exit codes: 0 done; 2 not found (HTTP 404), wrong size or sha256, a file
that does not load; 3 network (offline, refused, timeout, HTTP 5xx): running the command again
resumes from the partial ``.part`` files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from virnucpro.errors import ModelError
from virnucpro.models import verify
from virnucpro.models.fetch import DownloadError, fetch

FAIR_ESM = "https://dl.fbaipublicfiles.com/fair-esm"   # esm/pretrained.py: models/NAME.pt, regression/NAME-...
ESM_NAME = "esm2_t36_3B_UR50D"
DNABERT_REPO = "zhihan1996/DNABERT-S"
# The repository's commit id could not be looked up from where this was written: the weights are
# pinned by their sha256 (Hugging Face's LFS record) and the commit actually served is recorded
# (X-Repo-Commit) in virnucpro-models.json. Put the commit id here once it is known.
DNABERT_REVISION = "main"
VIRNUCPRO_REPO = "Li-Jing-1997/VirNucPro"
VIRNUCPRO_COMMIT = "0b7e6f1f1c5972ce30aa1ced5977890406d3efe2"
GROUPS = ("esm2", "dnabert", "classifiers")


@dataclass(frozen=True)
class Remote:
    group: str                  # esm2 | dnabert | classifiers
    rel: str                    # path inside MODELS_DIR (and under --base-url)
    url: str                    # the publisher's URL
    sha256: str | None = None   # published sha256, where there is one
    size: int | None = None     # published size in bytes, where there is one
    approx: str = ""            # size for people


def catalogue() -> list[Remote]:
    hf = f"https://huggingface.co/{DNABERT_REPO}/resolve/{DNABERT_REVISION}"
    gh = f"https://raw.githubusercontent.com/{VIRNUCPRO_REPO}/{VIRNUCPRO_COMMIT}"
    return [
        Remote("esm2", f"{ESM_NAME}.pt", f"{FAIR_ESM}/models/{ESM_NAME}.pt", approx="5.7 GB"),
        Remote("esm2", f"{ESM_NAME}-contact-regression.pt",
               f"{FAIR_ESM}/regression/{ESM_NAME}-contact-regression.pt", approx="a few KB"),
        Remote("dnabert", "DNABERT-S/config.json", f"{hf}/config.json", approx="1 KB"),
        Remote("dnabert", "DNABERT-S/tokenizer.json", f"{hf}/tokenizer.json", approx="170 KB"),
        Remote("dnabert", "DNABERT-S/pytorch_model.bin", f"{hf}/pytorch_model.bin",
               sha256="f3cfc3d0541859df64759e758cc4bc40fe1d5760799a7d098a9f9f09501c1e5f", approx="468 MB"),
        Remote("classifiers", "300_model.pth", f"{gh}/300_model.pth", approx="7 MB"),
        Remote("classifiers", "500_model.pth", f"{gh}/500_model.pth", approx="7 MB"),
    ]


def _load_group(group: str, root: Path, files: list[Path]) -> None:
    """Load what a group's files make, as a run does (zip CRCs checked, weights-only); ModelError if not."""
    from virnucpro.models import dnabert, esm2
    from virnucpro.models.classifier import chunk_length_from_name, load_classifier
    from virnucpro.models.safeload import check_zip_records
    for f in files:
        if f.suffix in (".pt", ".pth", ".bin"):
            check_zip_records(f, "model file")
    if group == "esm2":
        esm2.read_checkpoint(root / f"{ESM_NAME}.pt", mmap=True)
    elif group == "dnabert":
        dnabert.load_dnabert(root / "DNABERT-S")
    else:
        for f in files:
            load_classifier(f, chunk_length_from_name(f))


def _named(message: str, files: list[Path]) -> list[Path]:
    """The files a loading error names (the longest match: DNABERT-S/x names DNABERT-S too)."""
    named = [f for f in files if str(f) in message]
    return [max(named, key=lambda f: len(str(f)))] if named else []


def download(to: Path, base_url: str | None = None, only: tuple[str, ...] = GROUPS,
             say: Callable[[str], None] = print, bar=None, timeout: float = 60) -> dict:
    """Fetch, check and record the chosen groups into ``to``. ``bar(name, total)`` returns a progress
    callback ``(done, total)`` for one file, or None. Returns the record's entries."""
    from virnucpro import __version__
    to = Path(to).expanduser()
    to.mkdir(parents=True, exist_ok=True)
    record = verify.read_record(to)
    for group in [g for g in GROUPS if g in only]:
        remotes = [r for r in catalogue() if r.group == group]
        fresh: list[Path] = []
        for r in remotes:
            dest, rec = to / r.rel, record.get(r.rel)
            if dest.is_file() and rec and rec.get("size") == dest.stat().st_size and \
                    (r.sha256 is None or rec.get("sha256") == r.sha256):
                say(f"{r.rel}: already there ({rec['size']:,} bytes, sha256 {rec['sha256'][:16]} recorded)")
                continue
            if dest.is_file() and not rec:      # put there by hand: kept if it is the published file / loads
                digest, size = verify.sha256_file(dest)
                if r.sha256 is None or digest == r.sha256:
                    say(f"{r.rel}: already there ({size:,} bytes, not downloaded here: checked by loading)")
                    record[r.rel] = {"size": size, "sha256": digest, "checked": "loaded (was already there)"}
                    continue
            url = f"{base_url.rstrip('/')}/{r.rel}" if base_url else r.url
            say(f"{r.rel}: {r.approx} from {url}")
            got = fetch(url, dest, size=r.size, sha256=r.sha256, timeout=timeout,
                        progress=bar(r.rel, r.size) if bar else None, user_agent=f"virnucpro/{__version__}")
            record[r.rel] = {"url": url, "size": got.size, "sha256": got.sha256,
                             "checked": "publisher's sha256" if r.sha256 else "loaded (no published sha256)"}
            if "x-repo-commit" in got.headers:
                record[r.rel]["revision"] = got.headers["x-repo-commit"]
            fresh.append(dest)
        paths = [to / r.rel for r in remotes]
        try:
            _load_group(group, to, paths)
        except ModelError as exc:
            blamed = _named(str(exc), paths) or fresh
            for p in blamed:
                record.pop(p.relative_to(to).as_posix(), None)
                if p in fresh:
                    p.unlink(missing_ok=True)
            verify.write_record(to, record)
            gone = ", ".join(str(p) for p in blamed if p in fresh)
            kept = ", ".join(str(p) for p in blamed if p not in fresh)
            tail = (f"removed {gone}: run the command again to download it anew" if gone else
                    f"{kept} was there before this command: delete it and run the command again" if kept else
                    f"delete the {group} files and run the command again")
            raise DownloadError(f"{exc} -- {tail}") from None
        verify.write_record(to, record)
        say(f"{group}: checked by loading, recorded in {to / verify.RECORD_NAME}")
    return record
