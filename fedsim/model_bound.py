"""The model-specific AGLFOP bound of a finished run: glue between a run folder and
:mod:`fedsim.fairness.aglfop` with an ROC region.

Hamman & Dutta, ICLR 2024, Sec. 5.  The model-agnostic AGLFOP lets the classifier see the
true label, so on data whose features cannot predict the label (Adult) its optimum is
~1 and the gap to a trained model is mostly error that no fair model could remove.  The
*model-specific* variant restricts each group's rates ``(FPR_z, TPR_z)`` to the convex
hull of the trained model's own ROC points: "what could thresholding this model's scores
per group (with randomisation) reach under the budgets".

This module rebuilds the run's test split from its ``config.toml``, scores it with the
final weights (``model.safetensors``; score = logit(1) - logit(0), the model predicts 1
exactly when the score is > 0), and computes the ROC points per group, the model-specific
frontier on the grids of the model-agnostic one, the optimum at the model's own
disparities and ``H(Z)`` (the scale of every "bits" axis in the report).

Wiring: :func:`with_model_bound` takes the :class:`~fedsim.fairness.report.ReportInputs`
that ``fedsim.report_run.write_report`` builds and returns them with the model-specific
fields filled; call it between building the inputs and ``build_report``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from fedsim import results
from fedsim.config import load_scenario
from fedsim.data import build_federated
from fedsim.errors import ConfigError, DataError, FedsimError
from fedsim.fairness.aglfop_feasible import accuracy, disparities_bits, entropy_bits
from fedsim.fairness.report import ReportInputs
from fedsim.fairness.roc import hull_points, roc_points

__all__ = ["ModelBound", "ModelScores", "model_bound", "score_test_split", "with_model_bound"]

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
ProgressFn = Any  # Callable[[int, int], None]


@dataclass(frozen=True)
class ModelScores:
    """The final model's scores on every client's test split (rows concatenated)."""

    scores: FloatArray
    labels: IntArray
    groups: IntArray
    clients: IntArray
    num_clients: int
    num_groups: int

    def counts(self) -> IntArray:
        """Row counts ``[s, z, y]``."""
        out = np.zeros((self.num_clients, self.num_groups, 2), np.int64)
        np.add.at(out, (self.clients, self.groups, self.labels), 1)
        return out

    def classifier(self) -> FloatArray:
        """The model's own joint ``Q[s, z, y, ŷ]`` (ŷ = 1 when the score is > 0)."""
        q = np.zeros((self.num_clients, self.num_groups, 2, 2))
        np.add.at(q, (self.clients, self.groups, self.labels, (self.scores > 0).astype(int)), 1.0)
        return q / q.sum()


@dataclass(frozen=True)
class ModelBound:
    """The model-specific AGLFOP bound of a run."""

    roc: list[FloatArray]
    counts: IntArray
    entropy_z_bits: float
    model_point: dict[str, float]
    bound: dict[str, Any]
    frontier: pd.DataFrame | None


def score_test_split(
    run_dir: str | Path, config_toml: str, data_dir: str | Path | None = None
) -> ModelScores:
    """Rebuild a run's test split and score it with the run's final weights.

    Raises
    ------
    ConfigError
        ``config.toml`` is missing or invalid.
    DataError
        The data cannot be rebuilt, the label is not binary, or the weights do not fit.
    """
    import torch  # torch: start-up of `fedsim report`; only when a model is scored

    from fedsim.clients.models import scenario_model  # torch: as above

    if not config_toml:
        raise ConfigError("report: the run folder has no config.toml to rebuild its test split")
    try:
        sc = load_scenario(tomllib.loads(config_toml))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"report: config.toml of the run is not valid TOML: {exc}") from exc
    data = build_federated(sc.data, sc.partition, sc.seed, data_dir, sc.evaluation)
    raw = data.raw
    if raw.num_classes != 2:
        raise DataError(f"the model-specific bound needs a binary label; {raw.num_classes} here")
    model = scenario_model(sc, raw.input_shape, raw.num_classes)  # plug-ins and options too
    try:
        weights = results.load_weights(run_dir)
        model.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
    except (OSError, RuntimeError, KeyError) as exc:
        raise DataError(f"report: cannot load the run's model.safetensors: {exc}") from exc
    from fedsim.clients.training import predict  # torch: as above

    parts = []
    for k, c in enumerate(data.clients):
        logits = predict(model, torch.as_tensor(c.x_test)).double().numpy()
        parts.append((logits[:, 1] - logits[:, 0], c.y_test, c.z_test, np.full(len(c.y_test), k)))
    scores, labels, groups, clients = (np.concatenate(col) for col in zip(*parts, strict=True))
    return ModelScores(
        scores.astype(float),
        labels.astype(np.int64),
        groups.astype(np.int64),
        clients.astype(np.int64),
        data.num_clients,
        raw.num_groups,
    )


def model_bound(
    scored: ModelScores,
    eps_global_grid: FloatArray | None = None,
    eps_local_grid: FloatArray | None = None,
    *,
    progress: ProgressFn | None = None,
) -> ModelBound:
    """ROC hull, model point, optimum at the model's disparities and (optional) frontier.

    The optimum is taken at the model's disparities *on the rebuilt rows* (every client's
    test split), where the model itself is a feasible classifier of the model-specific
    problem, so the bound is never below its accuracy.
    """
    from fedsim.fairness.aglfop import frontier, solve  # cvxpy: only when a model is scored

    counts = scored.counts()
    curves = roc_points(scored.scores, scored.labels, scored.groups, num_groups=scored.num_groups)
    roc = [hull_points(curve) for curve in curves]
    q_model = scored.classifier()
    global_bits, local_bits = disparities_bits(q_model)
    point = {
        "accuracy": accuracy(q_model),
        "global_disparity": global_bits,
        "local_disparity": local_bits,
    }
    bound: dict[str, Any] = {"eps_global": global_bits, "eps_local": local_bits}
    try:
        res = solve(counts, global_bits, local_bits, roc_region=roc, compute_pid=False)
        bound |= {"accuracy": res.accuracy, "status": res.status}
    except FedsimError as exc:
        bound |= {"accuracy": float("nan"), "status": f"failed: {exc}"}
    table = None
    if eps_global_grid is not None and eps_local_grid is not None:
        table = frontier(
            counts,
            eps_global_grid,
            eps_local_grid,
            roc_region=roc,
            compute_pid=False,
            progress=progress,
        )
    h_z = entropy_bits(counts.sum(axis=(0, 2)) / counts.sum())
    return ModelBound(roc, counts, h_z, point, bound, table)


def with_model_bound(
    inputs: ReportInputs,
    run_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
) -> ReportInputs:
    """``inputs`` with the model-specific frontier, bound and ``H(Z)`` filled in.

    The model-specific frontier uses the grids of ``inputs.frontier`` (the model-agnostic
    one), so the two are comparable point by point; without that frontier only the bound
    at the model's disparities is computed.  A run whose model cannot be scored (no
    fairness accounting, a non-binary label, missing files) gets a note instead; the
    report never fails because of the model-specific bound.
    """
    inputs = dataclasses.replace(inputs, entropy_z_bits=_stored_entropy_z(Path(run_dir)))
    if inputs.frontier is None:
        return dataclasses.replace(inputs, model_note="No model-agnostic frontier to compare.")
    grid_g = np.unique(inputs.frontier["eps_global"].to_numpy(float))
    grid_l = np.unique(inputs.frontier["eps_local"].to_numpy(float))
    try:
        scored = score_test_split(run_dir, inputs.config_toml, data_dir)
        found = model_bound(scored, grid_g, grid_l, progress=progress)
    except FedsimError as exc:
        logger.warning("model-specific bound not computed: %s", exc)
        return dataclasses.replace(inputs, model_note=f"No model-specific bound: {exc}")
    return dataclasses.replace(
        inputs,
        model_frontier=found.frontier,
        model_bound={**found.bound, "model": found.model_point},
        entropy_z_bits=found.entropy_z_bits,
    )


def _stored_entropy_z(run_dir: Path) -> float:
    """``H(Z)`` from the run's ``frontier.json`` (NaN when it has none)."""
    try:
        record = json.loads((run_dir / "frontier.json").read_text())
        return float(record["information_bits"]["H(Z)"])
    except (OSError, ValueError, KeyError, TypeError):
        return float("nan")
