"""A partitioner of your own: ``fn(labels, sensitive, num_clients, rng, **options)``.

``group_majority`` gives every client a home group of the sensitive attribute
(client ``i``: group ``i mod G``): each row goes, with probability ``majority``, to a
random client whose home is the row's group, otherwise to any client. ``majority =
1/G`` is an IID split; ``majority = 1`` puts each group on its own clients. It returns
one array of row indices per client (disjoint). The scenario names it by reference,
``[partition] method = "custom_partitioner:group_majority"``, with its keyword
arguments in ``[partition.options]``; ``rng`` is a ``numpy.random.Generator`` seeded
from the scenario's seed.
"""

from __future__ import annotations

import numpy as np


def group_majority(
    labels: np.ndarray,
    sensitive: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    majority: float = 0.8,
) -> list[np.ndarray]:
    """Row indices per client, each client mostly holding its home group's rows."""
    groups = np.unique(sensitive)
    home = groups[np.arange(num_clients) % len(groups)]  # client -> its home group
    owner = rng.integers(0, num_clients, len(labels))  # the "any client" choice
    for g in groups:
        rows = np.flatnonzero((sensitive == g) & (rng.random(len(labels)) < majority))
        owner[rows] = rng.choice(np.flatnonzero(home == g), len(rows))
    return [np.flatnonzero(owner == c) for c in range(num_clients)]


if __name__ == "__main__":
    from _cli import parse_args, report_line, run_example

    args = parse_args("custom_partitioner")
    print(report_line("custom_partitioner", run_example("custom_partitioner", args)))
