"""EngineConfig: every setting that decides how the fast engine computes, in one typed object.

It is handed to each engine instance (``make_engine("fast", models, device, config)``), which sets
the choices on its own model instances (``PackedESM2.kernels``/``.gelu``, DNABERT-S's layer
function): two engines in one process never share a choice. ``to_json()`` goes into run.json, and
``identity()`` (the fields that change the numbers) into the resume identity of the run directory:
checkpoints made with another setting are refused.

Users set ``precision``, ``esm_kernels`` (``--no-compile``: eager) and ``gpu_memory_gib`` with
options of ``virnucpro predict``; the experiment switches below come from environment variables,
read in one place only (``virnucpro.cli.engine_config_from_env``):

    VIRNUCPRO_ESM_GELU=exact|tanh-epilogue   ESM-2's GELU in fp16/bf16 on a GPU (default tanh-epilogue)
    VIRNUCPRO_DNABERT_COMPILE=0|1            DNABERT-S's layers through torch.compile (default 0)
    VIRNUCPRO_TORCH_PROFILE=PATH[:FIRST[:COUNT]]   a torch.profiler trace of the GPU loop's batches
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from virnucpro.errors import InputError

PRECISIONS = ("fp16", "bf16", "fp32", "fp8")   # fp8: ESM-2's GEMMs only (models/esm2_fp8.py), opt-in
AUTO = "auto"   # no --precision given: fp16 on a GPU, fp32 on a CPU (``resolved``)
# auto: the Triton kernels on a GPU where Triton is installed, else eager (plain PyTorch ops: CPUs,
# --no-compile)
KERNEL_CHOICES = ("auto", "eager")
GELU_CHOICES = ("exact", "tanh-epilogue")
PROFILE_FIRST, PROFILE_COUNT = 20, 30   # two or three unit boundaries


@dataclass(frozen=True)
class ProfileSpec:
    """A torch.profiler window: batches ``first`` .. ``first + count - 1`` of the GPU loop, traced
    into ``path`` (the device and process id are added to the name)."""
    path: str
    first: int = PROFILE_FIRST
    count: int = PROFILE_COUNT

    @classmethod
    def parse(cls, spec: str) -> "ProfileSpec":
        """``PATH[:FIRST[:COUNT]]``; a PATH may itself hold ':'."""
        parts = spec.rsplit(":", 2)
        while len(parts) > 1 and not parts[-1].isdigit():   # a path with ':' in it
            parts = [":".join(parts[:2])] + parts[2:]
        try:
            nums = [int(x) for x in parts[1:]]
        except ValueError:
            raise InputError(f"VIRNUCPRO_TORCH_PROFILE={spec!r}: PATH[:FIRST[:COUNT]]") from None
        if not parts[0]:
            raise InputError(f"VIRNUCPRO_TORCH_PROFILE={spec!r}: PATH[:FIRST[:COUNT]]")
        first, count = (nums + [PROFILE_FIRST, PROFILE_COUNT][len(nums):])[:2]
        return cls(parts[0], first, count)


@dataclass(frozen=True)
class EngineConfig:
    precision: str = AUTO                # the matmul dtype (auto: by device); the residual stream is fp32 always
    esm_kernels: str = "auto"            # ESM-2's element-wise work between its GEMMs (KERNEL_CHOICES)
    # fc1 + GELU as one cuBLASLt GEMM with its tanh-GELU epilogue, in fp16/bf16 on a GPU only (fp32 and
    # CPUs: the exact GELU always): ESM-2 3.8% faster at 99.94% frame / 99.93% chunk label agreement
    # with the reference engine (docs/benchmarks.md#h200-gelu-epilogue)
    gelu: str = "tanh-epilogue"
    # DNABERT-S 11% faster but 1-3 s more start-up per process (docs/benchmarks.md#exp-dnabert-compile)
    dnabert_compile: bool = False
    gpu_memory_gib: float | None = None  # behave as a GPU of this size: token budget and allocation cap
    loader_workers: int = 2              # DataLoader processes tokenising ahead of the GPU loop
    profile: ProfileSpec | None = None   # diagnostics only: never in a timed run

    # The fields that change the computed numbers: they must match for --resume.
    IDENTITY_FIELDS = ("precision", "esm_kernels", "gelu", "dnabert_compile")

    def __post_init__(self) -> None:
        for name, value, choices in (("precision", self.precision, PRECISIONS + (AUTO,)),
                                     ("ESM-2 kernels", self.esm_kernels, KERNEL_CHOICES),
                                     ("GELU", self.gelu, GELU_CHOICES)):
            if value not in choices:
                raise InputError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
        if self.loader_workers < 0:
            raise InputError(f"loader workers must be >= 0, not {self.loader_workers}")

    def resolved(self, device_type: str) -> "EngineConfig":
        """``auto`` precision settled for a device: fp16 on a GPU (bf16 measured only ~99.1% label
        agreement, docs/benchmarks.md#exp-bf16), fp32 on a CPU (fp16 there is slower and less exact;
        fp32 scores are within 1e-5 of the reference engine's)."""
        if self.precision != AUTO:
            return self
        return self.replace(precision="fp16" if device_type == "cuda" else "fp32")

    def replace(self, **changes) -> "EngineConfig":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        """Every field, JSON-ready (run.json's ``engine_config``)."""
        return dataclasses.asdict(self)

    def identity(self) -> dict:
        """The fields checkpoints depend on (the run directory's manifest; --resume compares them)."""
        return {k: getattr(self, k) for k in self.IDENTITY_FIELDS}

    # -- what the choices mean on a device ----------------------------------------------------

    def gelu_epilogue(self, device_type: str) -> bool:
        """ESM-2's fc1 with the tanh-GELU epilogue? Never in fp32 (which must match fair-esm to 1e-4),
        nor in fp8 (its quantising pass computes the exact GELU), nor on a CPU (no fused kernel there)."""
        return self.gelu == "tanh-epilogue" and self.precision in ("fp16", "bf16") and device_type == "cuda"

    def kernels_on(self, device_type: str, triton_available: bool) -> str:
        """``triton`` or ``eager`` on this device: a CPU always runs eager."""
        if self.esm_kernels == "eager" or device_type != "cuda":
            return "eager"
        return "triton" if triton_available else "eager"
