"""Which process this is in a data-parallel run, the process group it talks through, and what the ranks share.

`torchrun --nproc_per_node=N -m nanogpt_cli train ...` starts N copies of the training loop. torchrun tells each
copy who it is through the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); `Ranks.from_env`
reads it and `process_group` joins the others through torch.distributed (NCCL between GPUs, Gloo between CPU
processes). Everything else follows nanochat's base_train:

- every rank builds the same model from the same seed (and DDP broadcasts rank 0's weights once to be sure);
- the in-memory data loader gives rank r rows r*B .. (r+1)*B-1 of each global batch, so N ranks read what one
  would; streamed data is shared out by units instead (rank r reads units r, r+N, ...: `data.stream`);
- DDP averages the gradients, so every rank steps its optimizers on the same numbers and the weights stay equal
  (Muon's orthogonalisation included: it only ever sees the averaged gradient);
- the loss and the validation bits per byte are combined over ranks; rank 0 logs, samples and saves.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import inspect
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from nanogpt_core.errors import ComponentError, ConfigError

# How long a rank waits for the others in one collective before giving up. torchrun ends all workers when one dies,
# so this only matters if a rank hangs without dying; nanochat keeps torch's default (10 minutes) too.
COLLECTIVE_TIMEOUT = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, samples and saves; the others only compute."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> Ranks:
        """torchrun's RANK / WORLD_SIZE / LOCAL_RANK, or a single process when they are absent."""
        try:
            ranks = cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                        int(os.environ.get("LOCAL_RANK", 0)))
        except ValueError as exc:
            raise ConfigError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({exc}).") from exc
        if ranks.world_size < 1 or not 0 <= ranks.rank < ranks.world_size or ranks.local_rank < 0:
            raise ConfigError(f"RANK={ranks.rank} is not one of WORLD_SIZE={ranks.world_size} ranks; "
                              f"launch with torchrun, which sets them.")
        if ranks.is_distributed and not (os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
            raise ConfigError(f"WORLD_SIZE={ranks.world_size} but MASTER_ADDR/MASTER_PORT are not set; launch "
                              f"multi-process training with torchrun (see docs/distributed.md).")
        return ranks


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """The device this rank computes on: its own GPU (cuda:LOCAL_RANK) when training on CUDA with several ranks."""
    if not ranks.is_distributed:
        return device
    if device.type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={ranks.local_rank} but this node has {torch.cuda.device_count()} "
                              f"GPU(s); use --nproc_per_node={torch.cuda.device_count()} or fewer.")
        return torch.device("cuda", ranks.local_rank)
    if device.type != "cpu":
        raise ConfigError(f"multi-process training runs on CUDA (NCCL) or CPU (Gloo), not {device.type}; "
                          f"use --device cuda or --device cpu.")
    return device


def backend_for(device: torch.device) -> str:
    """NCCL moves GPU tensors between GPUs directly; Gloo is torch's CPU backend."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(ranks: Ranks, device: torch.device) -> Iterator[None]:
    """Join torchrun's process group for the body (nothing to do for a single process) and always leave it.

    Leaving on errors too: a process that exits without destroy_process_group leaks NCCL resources and warns. (The
    other ranks do not wait out COLLECTIVE_TIMEOUT either way: torchrun stops them all when one rank exits with an
    error.)
    """
    if not ranks.is_distributed or dist.is_initialized():
        yield  # single process, or a caller (a test, a notebook) that set the group up itself and owns it
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL and every bare .cuda() call of this process use this rank's GPU
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend=backend_for(device), rank=ranks.rank, world_size=ranks.world_size,
                            timeout=COLLECTIVE_TIMEOUT, **kwargs)
    try:
        yield
        # Leave together, and only after the DDP wrappers (kept alive by reference cycles) are gone: tearing gloo
        # down while a peer still talks to it, or before a reducer that uses it is freed, can abort the process at
        # exit ("terminate called without an active exception"), seen in CI-like runs after a successful training.
        dist.barrier()
    finally:
        gc.collect()
        dist.destroy_process_group()


def data_parallel(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`module` in DistributedDataParallel: its backward averages the gradients over ranks (bucketed, overlapped).

    The module's only buffers are the rotary tables, computed the same on every rank, so DDP is told not to
    re-broadcast them before every forward (torch >= 2.13 spells that `forward_sync_buffers`, older torch
    `broadcast_buffers`). DDP broadcasts rank 0's weights once here, so the replicas start bit-identical.
    """
    from torch.nn.parallel import DistributedDataParallel

    params = inspect.signature(DistributedDataParallel.__init__).parameters
    no_buffer_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else \
        {"broadcast_buffers": False}
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, **no_buffer_sync)


def check_every_parameter_used(model: torch.nn.Module) -> None:
    """After the first backward under DDP: a ComponentError naming a trainable parameter the loss never reached.

    DDP averages gradients bucket by bucket as backward produces them; a parameter that takes no part in the loss
    never produces one, so its bucket never fills and the next step dies inside DDP with "Expected to have finished
    reduction in the prior iteration". One process would train on silently (that weight just never changes).
    """
    unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    if unused:
        more = f" (and {len(unused) - 1} more)" if len(unused) > 1 else ""
        raise ComponentError(f"{unused[0]}{more} got no gradient: the loss does not depend on it, which data-parallel "
                             f"training (DDP) cannot sync; use every parameter a component creates in its forward, "
                             f"or do not create it.")


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has written the tokenizer the others read)."""
    if active():
        dist.barrier()


def broadcast_from_main(value: str) -> str:
    """Rank 0's value on every rank (e.g. the run folder, whose default name comes from rank 0's clock)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_from_ranks(value: Any) -> list[Any]:
    """Every rank's `value` (small, picklable), in rank order, on every rank: e.g. each rank's position in its
    own share of streamed data, which rank 0 saves in the checkpoint for all of them."""
    if not active():
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def mean_over_ranks(value: float, device: torch.device) -> float:
    """The mean of a per-rank number over all ranks (every rank gets the same result): the logged loss.

    SUM then divide, because Gloo has no AVG reduction; in float64 so the mean of equal numbers is that number.
    """
    if not active():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.item() / dist.get_world_size()


def max_over_ranks(value: int, device: torch.device) -> int:
    """The largest of a per-rank integer, on every rank: decisions that change the control flow must be unanimous.

    Ctrl-C reaches torchrun, which forwards SIGINT to each worker one after the other (and SIGTERM the same way); a
    rank that stopped a step before the others would leave them waiting in the next gradient all-reduce. Asking at
    every step boundary (with the signal's number, 0 for none) makes all ranks stop at the same one, for the same
    reason.
    """
    if not active():
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter's bytes: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def ranks_with_other_weights(model: torch.nn.Module, device: torch.device) -> tuple[str, list[int]]:
    """(rank 0's weights digest, the ranks whose weights differ from rank 0's).

    Data-parallel training keeps N copies of the weights that must never drift apart: DDP only syncs gradients,
    so a rank that stepped on other numbers would train a different model without any error. Checked at the end.
    """
    digest = weights_digest(model)
    if not active():
        return digest, []
    mine = torch.tensor(list(bytes.fromhex(digest)), dtype=torch.uint8, device=device)
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, mine)
    reference = gathered[0]
    return bytes(reference.tolist()).hex(), [r for r, g in enumerate(gathered) if not torch.equal(g, reference)]
