"""Which device a run uses, how it computes there, and how fast that device could go (for MFU).

Training runs in fp32 everywhere; on CUDA the forward pass runs under bf16 autocast as nanochat's does (weights,
gradients and optimizer state stay fp32; the loss is computed in fp32). CPU and MPS stay in fp32: bf16 on CPU is slow
and only approximates what the learner will compare against. A GPU without native bf16 (V100, T4) trains in fp32
too rather than emulate bf16, which would be slower than fp32 there.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

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
    """True where training runs its matmuls in bf16: a CUDA GPU with native bf16 (Ampere and newer)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)


def autocast_context(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (nanochat's mixed precision); a no-op context elsewhere. Safe to enter repeatedly."""
    if uses_bf16(device):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
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
