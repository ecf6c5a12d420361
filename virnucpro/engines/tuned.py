"""Tuned files: the fast engine's settings that ``virnucpro tune`` measured best on one GPU model
with one memory size, which ``virnucpro predict`` then takes as its defaults on that GPU.

    DIR/<GPU model>-<memory>gib.json       e.g. nvidia-h100-80gb-hbm3-80gib.json
                                                nvidia-h100-80gb-hbm3-24gib.json   (tune --gpu-memory-gib 24)
                                                cpu-<CPU model>-<RAM>gib.json       (tune --device cpu)

DIR is the user's ``$XDG_CONFIG_HOME/virnucpro/tuned`` (else ``~/.config/virnucpro/tuned``); it is
found by ``virnucpro.options.tuned_dir`` (engines read no environment). A file names the device it
was measured on inside too (``key``), and one whose key is not the present device's is never used,
whatever its name: a budget measured on an 80 GB card would not fit a 24 GB one, and a loader
setting measured beside one CPU says little about another.

What a file holds (``TUNED_FORMAT`` 1)::

    {"format": 1, "key": {"device_type", "model", "memory_gib", "emulated"},
     "values": {"token_budget", "dna_budget", "loader_workers", "loader_prefetch", "precision"},
     "figures": {...the sweep's table, drift, chosen-vs-default ratio...},
     "date", "virnucpro_version", "torch_version", "command"}

``precision`` is null unless the user let the sweep choose among precisions that change labels
(``tune --allow-precision-change``): then predict keeps its own default (fp16 on a GPU).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from virnucpro.core.files import atomic_write
from virnucpro.engines.config import PRECISIONS

TUNED_FORMAT = 1
VALUE_FIELDS = ("token_budget", "dna_budget", "loader_workers", "loader_prefetch", "precision")
# the smallest values a file may hold: a budget must hold the longest protein (168 tokens) and the
# longest DNABERT-S slice (501 nt) with room to pack; a loader keeps at least one batch ready
MINIMUM = {"token_budget": 1024, "dna_budget": 1024, "loader_workers": 0, "loader_prefetch": 1}


class TunedProblem(Exception):
    """A tuned file that cannot be used: its one-line reason."""


@dataclass(frozen=True)
class DeviceKey:
    """The device a tuned file belongs to."""
    device_type: str          # "cuda" | "cpu"
    model: str                # e.g. "NVIDIA H100 80GB HBM3"; a CPU's model name
    memory_gib: float         # the GPU's memory in whole GiB, or --gpu-memory-gib; a CPU's RAM
    emulated: bool = False    # memory_gib came from --gpu-memory-gib (the card has more)

    @property
    def slug(self) -> str:
        """The file name's stem: model and memory, lower case, [a-z0-9-] only."""
        model = re.sub(r"[^a-z0-9]+", "-", self.model.lower()).strip("-") or "unknown"
        prefix = "" if self.device_type == "cuda" else "cpu-"
        return f"{prefix}{model}-{_memory_text(self.memory_gib)}gib"

    def same_device(self, other: dict) -> bool:
        """``other`` (a file's ``key``) names this device: type, model and memory."""
        try:
            return (other.get("device_type") == self.device_type and other.get("model") == self.model
                    and math.isclose(float(other.get("memory_gib")), self.memory_gib, abs_tol=1e-6))
        except (TypeError, ValueError, AttributeError):
            return False

    def describe(self) -> str:
        mem = f"{_memory_text(self.memory_gib)} GiB"
        return f"{self.model} ({mem}{', as --gpu-memory-gib' if self.emulated else ''})"

    def to_json(self) -> dict:
        return asdict(self)


def _memory_text(gib: float) -> str:
    """24 -> "24", 23.5 -> "23p5" (a file name holds no dot before its extension)."""
    return f"{gib:g}".replace(".", "p")


def device_key(device: str, gpu_memory_gib: float | None = None) -> DeviceKey:
    """The key of ``device`` (``cuda``, ``cuda:N`` or ``cpu``). A GPU's name and memory come from
    NVML where it answers (no CUDA context in a coordinator), else from CUDA; the memory is rounded
    to whole GiB (an 80 GB H100 shows 79.6 GiB, a 24 GB RTX 4090 23.99). ``gpu_memory_gib`` (the
    ``--gpu-memory-gib`` of predict and tune) replaces the memory: the card behaves as one of that
    size, so its tuned values are that size's."""
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        from virnucpro.core.nvml import gpu_name, gpu_total_memory, nvml_session
        with nvml_session():   # one NVML start for both questions (the calls' own sessions nest in it)
            name, total = gpu_name(index), gpu_total_memory(index)
        if name is None or total is None:
            import torch
            props = torch.cuda.get_device_properties(index)
            name, total = props.name, props.total_memory
        memory, emulated = float(round(total / 2**30)), False
        device_type = "cuda"
    else:
        name, memory, emulated, device_type = cpu_model(), float(round(ram_bytes() / 2**30)), False, "cpu"
    if gpu_memory_gib is not None:
        memory, emulated = float(gpu_memory_gib), True
    return DeviceKey(device_type, name, memory, emulated)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine() or "cpu"


def ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


@dataclass
class Tuned:
    """A tuned file read and checked."""
    path: Path
    sha256: str
    values: dict              # VALUE_FIELDS -> value (precision may be None)
    data: dict                # the whole file


def tuned_path(directory: Path, key: DeviceKey) -> Path:
    return Path(directory) / f"{key.slug}.json"


def read_tuned(path: Path, key: DeviceKey) -> Tuned:
    """The tuned file at ``path`` for the device ``key``; TunedProblem (one line) when it is not
    JSON, not of this format, holds a value out of range, or belongs to another device."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = json.loads(raw.decode("utf-8"))
    except OSError as exc:
        raise TunedProblem(f"cannot read it ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise TunedProblem(f"not JSON ({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(data, dict) or data.get("format") != TUNED_FORMAT:
        raise TunedProblem(f"not a tuned file of format {TUNED_FORMAT}")
    if not isinstance(data.get("key"), dict) or not key.same_device(data["key"]):
        k = data.get("key") if isinstance(data.get("key"), dict) else {}
        raise TunedProblem(f"made for another device ({k.get('model', '?')}, {k.get('memory_gib', '?')} GiB), "
                           f"not this {key.describe()}")
    values = data.get("values")
    if not isinstance(values, dict) or set(values) != set(VALUE_FIELDS):
        raise TunedProblem(f"its values must be exactly {', '.join(VALUE_FIELDS)}")
    for name, low in MINIMUM.items():
        v = values[name]
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise TunedProblem(f"{name} {v!r} is not a whole number >= {low}")
    if values["precision"] is not None and values["precision"] not in PRECISIONS:
        raise TunedProblem(f"precision {values['precision']!r} is none of {', '.join(PRECISIONS)}")
    return Tuned(path, hashlib.sha256(raw).hexdigest(), dict(values), data)


def find_tuned(directory: Path, key: DeviceKey) -> tuple[Tuned | None, str | None]:
    """(the tuned file for ``key`` in ``directory``, None) when there is a sound one; (None, None)
    when there is none; (None, reason) when the file there cannot be used."""
    path = tuned_path(directory, key)
    if not path.exists():
        return None, None
    try:
        return read_tuned(path, key), None
    except TunedProblem as exc:
        return None, str(exc)


def write_tuned(directory: Path, key: DeviceKey, values: dict, body: dict) -> Path:
    """Write (atomically: the old file or the new one, never half of one) the tuned file of ``key``
    with ``values`` (VALUE_FIELDS) and ``body`` (figures, date, versions, command)."""
    if set(values) != set(VALUE_FIELDS):
        raise ValueError(f"tuned values must be exactly {VALUE_FIELDS}, not {sorted(values)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = tuned_path(directory, key)
    data = {"format": TUNED_FORMAT, "key": key.to_json(), "values": values, **body}
    with atomic_write(path) as fh:
        fh.write(json.dumps(data, indent=2) + "\n")
    read_tuned(path, key)   # what predict will read back
    return path


__all__ = ["DeviceKey", "MINIMUM", "TUNED_FORMAT", "Tuned", "TunedProblem", "VALUE_FIELDS", "device_key",
           "find_tuned", "read_tuned", "tuned_path", "write_tuned"]
