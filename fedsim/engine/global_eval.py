"""Server-side evaluation of the global model on one held-out global test set.

``[evaluation] global_test = true`` holds out rows of the pooled data before
partitioning (:func:`fedsim.data.federated.holdout_rows`); after every round the
server evaluates the aggregated model on them, as Flower's ``evaluate_fn`` would, and
records ``global-acc``, ``global-loss`` and, with a sensitive attribute, fairlearn's
group metrics prefixed ``global-`` (``global-demographic_parity_difference``,
``global-accuracy-<group name>``, ...; :func:`fedsim.fairness.metrics.table_metrics`).
The same rows serve every strategy and every scenario seed of a dataset, so runs
compare on equal terms.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from flwr.app import ArrayRecord

from fedsim.clients.models import scenario_model
from fedsim.clients.training import evaluate
from fedsim.config import Scenario
from fedsim.data import FederatedData
from fedsim.fairness.metrics import table_metrics

GlobalEvaluator = Callable[[ArrayRecord], dict[str, float]]


def global_evaluator(scenario: Scenario, data: FederatedData) -> GlobalEvaluator | None:
    """The per-round global evaluation of ``scenario``, or None when it is off."""
    if not scenario.evaluation.global_test or data.global_test is None:
        return None
    raw = data.raw
    x, y, z = data.global_test
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    model = scenario_model(scenario, raw.input_shape, raw.num_classes)

    def evaluate_arrays(arrays: ArrayRecord) -> dict[str, float]:
        model.load_state_dict(arrays.to_torch_state_dict())
        res = evaluate(model, xt, yt, z, raw.num_groups, raw.num_classes)
        out = {"global-acc": res.accuracy, "global-loss": res.loss}
        if raw.num_groups > 1 and res.counts.sum() > 0:
            for name, value in table_metrics(res.counts, raw.group_names).items():
                out[f"global-{name}"] = value
        return out

    return evaluate_arrays
