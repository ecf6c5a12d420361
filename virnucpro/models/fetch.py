"""One file over HTTP(S) with urllib only: resumable, checked, atomic.

Bytes go to ``DEST.part``; a transfer that breaks off (a dropped connection, a timeout, a server that
closes early) keeps them and goes on with an HTTP Range request, here up to ``retries`` times and in a
later run from the same ``.part``. A server that ignores Range (200 instead of 206) is read from the
start again. When the bytes are all there: the size (published, else the server's own) and the sha256
(where the publisher lists one) are checked, a file that fails is deleted, a good one is fsync'd and
renamed to DEST -- DEST is whole or absent, never half-written.

Errors are one line: ``NetworkError`` (exit 3: offline, refused, timed out, a server error; running
the same command again resumes) or ``DownloadError`` (exit 2: 404, wrong size, wrong sha256).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from virnucpro.errors import ModelError, VirnucproError

BLOCK = 1 << 20
RETRY_PAUSE_S = 1.0        # before the k-th resume of a broken transfer: RETRY_PAUSE_S * 2**k, at most 30 s


class NetworkError(VirnucproError):
    """The network or the server failed (offline, refused, timeout, HTTP 5xx); try again later."""

    exit_code = 3


class DownloadError(ModelError):
    """What came is not what was asked for (404, wrong size, wrong sha256): exit 2."""


class _Dropped(Exception):
    """The transfer broke off; what arrived is kept in the .part file."""


@dataclass
class Fetched:
    path: Path
    size: int
    sha256: str
    resumed_from: int                              # bytes already in DEST.part when this call began
    headers: dict = field(default_factory=dict)    # the last response's headers (lower-case names)


@dataclass
class _State:
    part: Path
    hasher: object = None
    hashed: int = 0           # bytes of .part the hasher has seen
    total: int | None = None  # the whole file's size as the server declares it

    def rehash(self) -> None:
        """Hash what .part holds (after a restart, or a part left by an earlier run)."""
        self.hasher, self.hashed = hashlib.sha256(), 0
        if self.part.exists():
            with open(self.part, "rb") as fh:
                while chunk := fh.read(8 << 20):
                    self.hasher.update(chunk)
                    self.hashed += len(chunk)


def _host(url: str) -> str:
    return urlparse(url).netloc or url


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fetch(url: str, dest: str | Path, *, size: int | None = None, sha256: str | None = None,
          progress: Callable[[int, int | None], None] | None = None, timeout: float = 60, retries: int = 3,
          user_agent: str = "virnucpro") -> Fetched:
    """Download ``url`` to ``dest`` (see the module docstring). ``progress(done_bytes, total_or_None)``
    is called as bytes arrive. Returns the file's size and sha256."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    st = _State(dest.with_name(dest.name + ".part"))
    resumed_from = st.part.stat().st_size if st.part.exists() else 0
    st.rehash()
    headers: dict = {}
    for attempt in range(retries + 1):
        try:
            headers = _transfer(url, st, size, timeout, progress, user_agent)
            break
        except _Dropped as exc:
            if attempt == retries:
                kept = st.part.stat().st_size if st.part.exists() else 0
                raise NetworkError(f"{url}: the transfer broke off {retries + 1} times ({exc}); {kept:,} bytes "
                                   f"kept in {st.part}: run the same command again to resume") from None
            time.sleep(min(RETRY_PAUSE_S * 2.0 ** attempt, 30.0))
    got = st.part.stat().st_size
    want = size if size is not None else st.total
    if want is not None and got != want:
        st.part.unlink()
        raise DownloadError(f"{url}: {got:,} bytes arrived, expected {want:,} (removed; run again)")
    digest = st.hasher.hexdigest()
    if sha256 is not None and digest != sha256.lower():
        st.part.unlink()
        raise DownloadError(f"{url}: sha256 {digest} is not the published {sha256.lower()}: the file is "
                            "damaged or not the published one (removed, not kept as "
                            f"{dest.name})")
    with open(st.part, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(st.part, dest)
    _fsync_dir(dest.parent)
    return Fetched(dest, got, digest, resumed_from, headers)


def _open(url: str, offset: int, timeout: float, user_agent: str):
    req = urllib.request.Request(url, headers={"User-Agent": user_agent, "Accept-Encoding": "identity",
                                               **({"Range": f"bytes={offset}-"} if offset else {})})
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:
            return exc                                   # the caller decides (whole already, or restart)
        if exc.code in (404, 410):
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}: not there (check --base-url, or the "
                                "publisher moved it)") from None
        if exc.code >= 500 or exc.code in (408, 429):
            raise NetworkError(f"{url}: HTTP {exc.code} {exc.reason} from {_host(url)}: try again later, or "
                               "use --base-url for a mirror") from None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
        raise NetworkError(f"cannot reach {_host(url)} ({reason}): offline, or blocked by a firewall or proxy? "
                           "Run again when online (a partial download resumes), or use --base-url for a "
                           "mirror") from None
    except (TimeoutError, socket.timeout, ConnectionError, http.client.HTTPException) as exc:
        raise NetworkError(f"{url}: {type(exc).__name__}: {exc or 'no answer'} (run again to resume)") from None


def _transfer(url: str, st: _State, size: int | None, timeout: float,
              progress: Callable[[int, int | None], None] | None, user_agent: str) -> dict:
    offset = st.part.stat().st_size if st.part.exists() else 0
    if size is not None and offset > size:           # a stale part of some other file: start afresh
        st.part.unlink()
        offset = 0
    if st.hashed != offset:
        st.rehash()
    resp = _open(url, offset, timeout, user_agent)
    headers = {k.lower(): v for k, v in resp.headers.items()}
    if getattr(resp, "code", 200) == 416:                  # nothing after offset
        resp.close()
        m = re.match(r"bytes \*/(\d+)", headers.get("content-range", ""))
        st.total = int(m.group(1)) if m else None
        if offset and (st.total == offset or (st.total is None and size == offset)):
            return headers                             # the part is the whole file: checked by the caller
        st.part.unlink(missing_ok=True)
        st.rehash()
        raise _Dropped("the server refused to go on from the partial file; starting over")
    with resp:
        status = resp.status
        length = headers.get("content-length")
        if status == 206:
            m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", headers.get("content-range", ""))
            if not m or int(m.group(1)) != offset:
                raise DownloadError(f"{url}: the server answered a request from byte {offset:,} with "
                                    f"{headers.get('content-range')!r}")
            st.total = int(m.group(3)) if m.group(3) != "*" else None
        else:                                          # 200: the whole file, whatever was asked
            if offset:
                st.part.unlink()
                st.rehash()
                offset = 0
            st.total = int(length) if length is not None else None
        if size is not None and st.total is not None and st.total != size:
            st.part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: the server offers {st.total:,} bytes, the published size is {size:,} "
                                "(not the published file?)")
        done = offset
        if progress:
            progress(done, st.total)
        with open(st.part, "ab") as out:
            while True:
                try:
                    chunk = resp.read(BLOCK)
                except (http.client.IncompleteRead, ConnectionError, TimeoutError, socket.timeout, OSError) as exc:
                    raise _Dropped(f"{type(exc).__name__} after {done:,} bytes") from None
                if not chunk:
                    break
                out.write(chunk)
                st.hasher.update(chunk)
                st.hashed += len(chunk)
                done += len(chunk)
                if progress:
                    progress(done, st.total)
    if st.total is not None and done < st.total:
        raise _Dropped(f"the connection closed after {done:,} of {st.total:,} bytes")
    return headers
