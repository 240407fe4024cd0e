"""Injected client faults (``[faults]`` in a scenario), decided per client and round.

Every decision draws from a generator seeded by (scenario seed, round, partition), so
a run with faults is as reproducible as one without.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedsim.config import FaultsConfig
from fedsim.seeds import Stream


class InjectedCrash(RuntimeError):
    """Raised by a client that the scenario tells to crash this round."""


@dataclass(frozen=True)
class FaultPlan:
    crash: bool = False
    nan: bool = False
    bad_shape: bool = False
    delay: float = 0.0
    byzantine: bool = False


def plan_faults(
    cfg: FaultsConfig, seed: int, server_round: int, partition_id: int, num_partitions: int
) -> FaultPlan:
    """Decide which faults hit ``partition_id`` in ``server_round``."""
    if cfg == FaultsConfig():
        return FaultPlan()
    rng = np.random.default_rng([seed, Stream.FAULTS, server_round, partition_id])
    crash, nan, shape, slow = rng.random(4)
    n_byz = int(round(cfg.byzantine_fraction * num_partitions))
    byz = set(
        np.random.default_rng([seed, Stream.BYZANTINE]).permutation(num_partitions)[:n_byz].tolist()
    )
    return FaultPlan(
        crash=bool(crash < cfg.crash_prob),
        nan=bool(nan < cfg.nan_prob),
        bad_shape=bool(shape < cfg.shape_prob),
        delay=cfg.straggler_delay if slow < cfg.straggler_prob else 0.0,
        byzantine=partition_id in byz,
    )


def corrupt_state(
    state: dict[str, torch.Tensor],
    anchor: dict[str, torch.Tensor],
    plan: FaultPlan,
    cfg: FaultsConfig,
) -> dict[str, torch.Tensor]:
    """Apply the planned reply corruption to a trained state dict (returns a new dict)."""
    out = dict(state)
    if plan.byzantine:
        scale = -1.0 if cfg.byzantine_mode == "sign-flip" else cfg.byzantine_scale
        out = {
            k: (anchor[k] + scale * (v - anchor[k])) if v.is_floating_point() else v
            for k, v in out.items()
        }
    if plan.nan:
        key = next(k for k, v in out.items() if v.is_floating_point())
        out[key] = torch.full_like(out[key], float("nan"))
    if plan.bad_shape:
        key = next(k for k, v in out.items() if v.ndim > 0 and v.shape[0] > 1)
        out[key] = out[key][:-1].clone()
    return out
