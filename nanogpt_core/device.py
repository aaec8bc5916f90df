"""Which device a run uses, how it computes there, and how fast that device could go (for MFU).

Training runs in fp32 everywhere; on CUDA the forward pass runs under bf16 autocast as nanochat's does (weights,
gradients and optimizer state stay fp32; the loss is computed in fp32). CPU and MPS stay in fp32 by default: the
forward pass is what a learner compares against, and bf16 only approximates it. A CPU with bf16 instructions
(AVX512-BF16, AMX) runs the forward in bf16 when asked (`--bf16`, or a time-budgeted run, `train.budget`); one
without them would emulate bf16, slower than fp32, so it is refused there. Muon's Newton-Schulz iterations, which
only need an approximate orthogonalisation, run in whichever of fp32 and bf16 this machine multiplies faster
(`newton_schulz_dtype`). A GPU without native bf16 (V100, T4) trains in fp32 too rather than emulate bf16, which
would be slower than fp32 there.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from nanogpt_core.errors import ConfigError

try:
    import resource  # POSIX only: the process's memory limits
except ImportError:  # Windows
    resource = None

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")

# Dense bf16 peak FLOP/s per GPU, from the vendors' spec sheets (no sparsity). Matched by substring, first hit wins,
# so the more specific names come first. Used only to print MFU; an unknown GPU prints no MFU rather than a guess.
# GPUs without bf16 (V100, T4) are absent on purpose: they train in fp32 here, which has no tensor-core peak to cite.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("GB200", 2.5e15),
    ("B200", 2.25e15),
    ("H200", 989e12),
    ("H100 PCIE", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("A6000", 155e12),
    ("RTX 6000 ADA", 364e12),
    ("RTX 5090", 209e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
)


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU. Asking for a device that is not there is a ConfigError, not a crash."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in DEVICE_CHOICES:
        raise ConfigError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}.")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu (or auto).")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps was asked for but this torch has no MPS backend; use --device cpu (or auto).")
    return torch.device(name)


def uses_bf16(device: torch.device) -> bool:
    """True where training runs its matmuls in bf16 by default: a CUDA GPU with native bf16 (Ampere and newer)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of the x86 instructions that multiply bf16


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware: AVX512-BF16 or AMX on x86 (Linux's /proc/cpuinfo flags), BF16
    on an Apple CPU (macOS's sysctl). torch's own check (`mkldnn._is_mkldnn_bf16_supported`) also says yes to any
    AVX512 CPU, where bf16 is converted in software and a matmul is slower than in fp32."""
    try:
        flags = set()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags.update(line.split(":", 1)[1].split())
        return any(flag in flags for flag in BF16_CPU_FLAGS) or "bf16" in flags  # "bf16": ARM's Features line
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                 timeout=5)
            return out.stdout.strip() == "1"
        except (OSError, subprocess.SubprocessError):
            return False
    return False


def check_bf16(device: torch.device) -> None:
    """Refuse bf16 autocast (`--bf16`) where it would be emulated: a CPU without bf16 instructions, MPS, an old GPU."""
    if device.type == "cuda" and uses_bf16(device):
        return
    if device.type == "cpu" and cpu_has_native_bf16():
        return
    reasons = {"cpu": "this CPU has no bf16 instructions (AVX512-BF16 or AMX)",
               "cuda": "this GPU has no native bf16 (it is older than Ampere)"}
    where = reasons.get(device.type, f"{device.type} runs no bf16 autocast here")
    raise ConfigError(f"--bf16: {where}, so bf16 would be emulated, slower than fp32; drop --bf16 (or --no-bf16).")


def autocast_context(device: torch.device, bf16: bool | None = None) -> contextlib.AbstractContextManager:
    """The forward pass's precision: bf16 autocast when `bf16` (None: the device's default, bf16 on a CUDA GPU with
    native bf16 as nanochat's mixed precision, fp32 elsewhere); a no-op context otherwise. Safe to enter
    repeatedly."""
    if uses_bf16(device) if bf16 is None else bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def configure_device(device: torch.device) -> None:
    """Per-process settings for fast training on `device`; nothing off CUDA.

    As nanochat: fp32 matmuls that remain outside autocast may use TF32 tensor cores ("high" precision, 10-bit
    mantissa inputs, fp32 accumulation), which the bf16 forward already sits far below in precision.
    """
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")


def peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak in FLOP/s, or None where MFU is not meaningful (CPU, MPS, unknown GPU, or a GPU
    that trains in fp32 because it lacks bf16: its bf16/fp16 tensor-core peak would make the MFU look tiny)."""
    if not uses_bf16(device):
        return None
    name = torch.cuda.get_device_name(device).upper()
    for key, flops in PEAK_BF16_FLOPS:
        if key in name:
            return flops
    return None


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so step timings measure the work, not the queueing."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# --- which dtype Muon's Newton-Schulz iterations run in --------------------------------------------------------


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype picked for a workload, and why (the measured milliseconds of each candidate, None if not timed)."""

    dtype: torch.dtype
    reason: str
    ms: dict[str, float] = field(default_factory=dict)


_NS_CHOICES: dict[tuple, DtypeChoice] = {}
NS_TIMING_REPEATS = 5
NS_DTYPE_ENV = "NANOGPT_NS_DTYPE"  # auto (measure), float32 or bfloat16: pin the choice (e.g. to compare runs)


def newton_schulz_dtype(shapes: Sequence[tuple[int, int]], device: torch.device) -> DtypeChoice:
    """The dtype in which Newton-Schulz orthogonalises matrices of these shapes fastest on `device`.

    On CUDA: bf16, nanochat's choice (tensor cores). Elsewhere it depends on the CPU: without bf16 instructions bf16
    matmuls are emulated and ~25x slower than fp32; with them (AVX512-BF16, AMX) bf16 can be ~2x faster. So the
    workload is measured, once per process and set of shapes: one Newton-Schulz iteration (X Xᵀ, A A, B X) on every
    matrix shape, weighted by how many matrices have it, in fp32 and bf16 interleaved, median of 5 after a warm-up.
    """
    device = torch.device(device)
    pinned = os.environ.get(NS_DTYPE_ENV, "auto").strip().lower()
    if pinned in ("float32", "bfloat16"):
        return DtypeChoice(getattr(torch, pinned), f"pinned by ${NS_DTYPE_ENV}")
    if pinned != "auto":
        raise ConfigError(f"${NS_DTYPE_ENV}={pinned!r}: use auto, float32 or bfloat16.")
    if device.type == "cuda":
        return DtypeChoice(torch.bfloat16, "CUDA: bf16 tensor cores (nanochat's choice)")
    if device.type == "meta":
        return DtypeChoice(torch.float32, "meta device: nothing to measure")
    counts: dict[tuple[int, int], int] = {}
    for shape in shapes:
        rows, cols = sorted(shape)  # the iteration runs on the wide orientation
        counts[(rows, cols)] = counts.get((rows, cols), 0) + 1
    key = (device.type, torch.get_num_threads(), tuple(sorted(counts.items())))
    if key not in _NS_CHOICES:
        _NS_CHOICES[key] = _same_on_every_rank(_time_newton_schulz(counts, device))
    return _NS_CHOICES[key]


def _same_on_every_rank(choice: DtypeChoice) -> DtypeChoice:
    """Rank 0's choice on every rank of a data-parallel run: ranks that orthogonalised in different dtypes would
    step their replicas apart. (Every rank measures at the same point of the setup, so all reach this collective.)"""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return choice
    flag = torch.tensor([1 if choice.dtype == torch.bfloat16 else 0], dtype=torch.int32)
    dist.broadcast(flag, src=0)
    dtype = torch.bfloat16 if flag.item() else torch.float32
    if dtype == choice.dtype:
        return choice
    return DtypeChoice(dtype, f"rank 0's choice (this rank measured {choice.reason.split(': ', 1)[-1]})", choice.ms)


def _time_newton_schulz(counts: dict[tuple[int, int], int], device: torch.device) -> DtypeChoice:
    if not counts:
        return DtypeChoice(torch.float32, "no matrices to orthogonalise")
    g = torch.Generator().manual_seed(0)
    inputs = {shape: torch.randn(shape, generator=g).to(device) for shape in counts}
    timings: dict[torch.dtype, list[float]] = {torch.float32: [], torch.bfloat16: []}

    def one_iteration(dtype: torch.dtype) -> float:
        t0 = time.perf_counter()
        for shape, n in counts.items():
            x = inputs[shape].to(dtype)
            for _ in range(n):
                a = x @ x.T
                x = 3.4445 * x + (-4.7750 * a + 2.0315 * a @ a) @ x
        synchronize(device)
        return time.perf_counter() - t0

    for dtype in timings:
        one_iteration(dtype)  # warm-up: first-call allocations and kernel selection
    for _ in range(NS_TIMING_REPEATS):
        for dtype in timings:
            timings[dtype].append(one_iteration(dtype))
    ms = {str(dtype).removeprefix("torch."): 1000 * statistics.median(t) for dtype, t in timings.items()}
    dtype = torch.bfloat16 if ms["bfloat16"] < ms["float32"] else torch.float32
    name = str(dtype).removeprefix("torch.")
    return DtypeChoice(dtype, f"measured on this {device.type}: {ms['float32']:.2f} ms fp32, {ms['bfloat16']:.2f} ms "
                              f"bf16 per iteration -> {name}", ms)


# --- how much memory there is ----------------------------------------------------------------------------------


def available_memory(device: torch.device) -> tuple[int, str] | None:
    """(bytes this process can still allocate on `device`, what limits it), or None where that cannot be known.

    CUDA: the GPU's free memory (`torch.cuda.mem_get_info`). CPU: the tightest of the machine's available RAM
    (MemAvailable, which counts reclaimable page cache), the container's memory limit (cgroup v2 or v1, minus what
    the group uses beyond reclaimable cache) and the process's address-space and data limits (`ulimit -v`, `-d`).
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free memory on {device}"
    if device.type != "cpu":
        return None
    limits = [limit for limit in (_meminfo_available(), _cgroup_available(), *_rlimit_available()) if limit]
    return min(limits, key=lambda limit: limit[0]) if limits else None


def _meminfo_available() -> tuple[int, str] | None:
    meminfo = _key_values(Path("/proc/meminfo"))
    if "MemAvailable" not in meminfo:
        return None
    return meminfo["MemAvailable"] * 1024, "available RAM"


def _cgroup_available() -> tuple[int, str] | None:
    """The memory limit of this process's cgroup minus what the group holds that cannot be reclaimed."""
    root = Path("/sys/fs/cgroup")
    own = _own_cgroup()
    for folder, limit_file, usage_file in ((root / own, "memory.max", "memory.current"),  # v2
                                           (root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes")):
        try:
            limit_text = (folder / limit_file).read_text().strip()
            usage = int((folder / usage_file).read_text())
        except (OSError, ValueError):
            continue
        if not limit_text.isdigit() or int(limit_text) >= 2**60:  # "max", or v1's "no limit" (about 2**63)
            continue
        reclaimable = _key_values(folder / "memory.stat").get("inactive_file", 0)
        return max(0, int(limit_text) - max(0, usage - reclaimable)), "the container's memory limit (cgroup)"
    return None


def _own_cgroup() -> str:
    """This process's cgroup v2 path (`0::/path` in /proc/self/cgroup), relative to /sys/fs/cgroup."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:].lstrip("/")
    except OSError:
        pass
    return ""


def _rlimit_available() -> list[tuple[int, str]]:
    """What `ulimit -v` (address space) and `ulimit -d` (data) leave of what this process already maps."""
    if resource is None:
        return []
    status = _key_values(Path("/proc/self/status"))
    found = []
    for limit, used, name in ((resource.RLIMIT_AS, "VmSize", "ulimit -v"),
                              (resource.RLIMIT_DATA, "VmData", "ulimit -d")):
        soft, _ = resource.getrlimit(limit)
        if soft != resource.RLIM_INFINITY and used in status:
            found.append((max(0, soft - status[used] * 1024), f"this process's memory limit ({name})"))
    return found


def _key_values(path: Path) -> dict[str, int]:
    """`Name: 123 kB` or `name 123` lines (/proc/meminfo, /proc/self/status, cgroup memory.stat) as numbers."""
    found = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].isdigit():
            found[parts[0]] = int(parts[1])
    return found
