"""The order documents are read in: a seeded permutation per epoch, a pure function of (seed, epoch, ...).

Reading the same stream in the same order every epoch lets a model memorise the order: on the built-in corpus the
demo's loss fell in a sawtooth with the epoch's period (97 steps), each tooth the model meeting text it had just
seen in the same sequence. Shuffling the documents each epoch breaks that, and costs nothing to resume: a
permutation that depends on nothing but the seed, the epoch and where in the data it applies (a file, a row group)
is recomputed on resume instead of being saved, so a checkpoint only needs the seed, the epoch and a position.
"""

from __future__ import annotations

import numpy as np


def permutation(n: int, seed: int, *where: int) -> np.ndarray:
    """A permutation of range(n), the same for the same (seed, *where) on every run, rank and machine.

    `where` says which permutation: (epoch,) for the documents of an in-memory corpus, (epoch, file) for the row
    groups of a file, (epoch, file, unit) for the documents of one row group. numpy's SeedSequence mixes the
    integers into independent streams, so neighbouring epochs or files get unrelated orders. (A negative --seed
    is taken modulo 2**64: SeedSequence wants non-negative integers.)
    """
    entropy = [seed % 2**64, *where]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy))).permutation(n)
