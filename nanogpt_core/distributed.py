"""Which process this is in a (possibly) multi-process run, and the rule that only rank 0 talks and writes.

The training loop is written against `Ranks` so a torchrun/DDP launch is an extension, not a rewrite: the data
loader already takes (rank, world_size), `evaluate_bpb` sums over ranks, gradient accumulation divides the batch by
world_size, and logging, samples and checkpoints happen on rank 0 only. What is missing for world_size > 1 is the
process group and the gradient all-reduce (DDP); until then a multi-process launch is refused with one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from nanogpt_core.errors import ConfigError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, samples and saves; the others only compute."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Ranks:
        """torchrun's RANK / WORLD_SIZE / LOCAL_RANK, or a single process when they are absent."""
        try:
            ranks = cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                        int(os.environ.get("LOCAL_RANK", 0)))
        except ValueError as exc:
            raise ConfigError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({exc}).") from exc
        if ranks.world_size > 1:
            raise ConfigError(f"this launch has WORLD_SIZE={ranks.world_size}, but multi-process (torchrun/DDP) "
                              f"training is not implemented yet; run a single process.")
        return ranks
