"""Named random streams: every draw derives from ``(scenario seed, stream, ...)``.

A stream id keeps draws of different purposes independent while all of them follow
from the one scenario seed, on every engine and in every process. The numbers are part
of a run's identity (changing one changes results), so they are named here once and
never reused.

Examples
--------
>>> import numpy as np
>>> from fedsim.seeds import Stream
>>> rng = np.random.default_rng([0, Stream.SUBSAMPLE])
>>> int(Stream.TRAIN)
5
"""

from __future__ import annotations

from enum import IntEnum


class Stream(IntEnum):
    """The purpose of a random stream (its id in ``SeedSequence([seed, id, ...])``)."""

    SUBSAMPLE = 1  # data: rows kept by data.max_samples (fedsim.data.federated)
    LABEL_NOISE = 2  # data: which labels a client's noise flips (per client)
    FAULTS = 3  # faults: crash/NaN/shape/straggler draws (per round and client)
    BYZANTINE = 4  # faults: which clients are Byzantine (once per run)
    TRAIN = 5  # client training: batch order, attack starts (per round and client)
    ROBUST_EVAL = 6  # client evaluation: PGD random starts of robust accuracy
    PARTITION_IID = 10  # partition: iid shuffle
    PARTITION_DIRICHLET = 11  # partition: dirichlet-label / dirichlet-sensitive
    PARTITION_PATHOLOGICAL = 12  # partition: pathological class assignment
    PARTITION_QUANTITY = 13  # partition: quantity skew
    PARTITION_SHARD = 14  # partition: shard shuffle and assignment
    PARTITION_SIZE = 15  # partition: linear / square / exponential row draw
    PARTITION_PLUGIN = 16  # partition: the rng handed to a user's partitioner
    HOLDOUT = 17  # data: the global test rows (with evaluation.holdout_seed, not the seed)
    BOOTSTRAP = 18  # fairness accounting: per-client bootstrap resamples (per round)
