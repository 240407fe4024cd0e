"""Per-example predictions of a run's final model on every client's test split.

The rows behind every fairness number fedsim reports, in the shape fairlearn's
``MetricFrame`` takes: rebuilt in the driver process from the scenario (the data and a
model come from :func:`fedsim.runtime.get_runtime`), scored with the final weights.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import pandas as pd

COLUMNS = ("client", "y_true", "y_pred", "sensitive", "group")


def predictions(run_config: Mapping[str, str], arrays: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row per test example of every client: ``client``, ``y_true``, ``y_pred``,
    ``sensitive`` (group index) and ``group`` (its name).

    Parameters
    ----------
    run_config
        The run's config (``scenario``: TOML text or path; ``data-dir``).
    arrays
        The final global weights by parameter name.

    Returns
    -------
    pandas.DataFrame
        Rows in partition-id order, each client's rows in its test-split order.
    """
    import torch

    from fedsim.clients.training import predict  # torch: start-up, only when asked for
    from fedsim.runtime import get_runtime  # torch and flwr: start-up, only when asked for

    rt = get_runtime(dict(run_config))
    model = copy.deepcopy(rt.model)
    model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in arrays.items()})
    parts = []
    for pid, c in enumerate(rt.data.clients):
        _, _, x, _ = rt.client_tensors(pid)  # the very tensors the clients evaluate
        pred = predict(model, x).argmax(1).cpu().numpy() if len(c.y_test) else c.y_test[:0]
        parts.append(
            pd.DataFrame(
                {
                    "client": np.full(len(c.y_test), pid, dtype=np.int64),
                    "y_true": np.asarray(c.y_test, dtype=np.int64),
                    "y_pred": np.asarray(pred, dtype=np.int64),
                    "sensitive": np.asarray(c.z_test, dtype=np.int64),
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    frame["group"] = np.asarray(rt.data.raw.group_names, dtype=object)[frame["sensitive"]]
    return frame[list(COLUMNS)]
