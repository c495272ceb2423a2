"""A resumable, per-process shuffled sampler: the data order is a pure function of (seed, rank, epoch).

Each process draws from its own fixed shard of the training samples, reshuffled every epoch with a
generator seeded by (seed, epoch); resuming at sample ``k`` replays exactly the order an uninterrupted
run would have used, without saving any iterator state.
"""

from __future__ import annotations

import numpy as np
import torch


class ResumableSampler(torch.utils.data.Sampler[int]):
    def __init__(self, num_samples: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0):
        self.shard = np.arange(rank, num_samples, world_size, dtype=np.int64)
        if self.shard.size == 0:
            raise ValueError(
                f"process {rank} of {world_size} gets no training samples (only {num_samples}); "
                f"record more demos or use fewer processes"
            )
        self.seed, self.rank = int(seed), int(rank)
        self.start = int(start)  # samples already consumed by this process

    def order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.rank, epoch])
        return self.shard[rng.permutation(self.shard.size)]

    def __iter__(self):
        pos = self.start
        while True:  # infinite: the trainer counts steps, not epochs
            epoch, offset = divmod(pos, self.shard.size)
            for i in self.order(epoch)[offset:]:
                yield int(i)
                pos += 1

    def __len__(self) -> int:  # one epoch of this shard
        return int(self.shard.size)
