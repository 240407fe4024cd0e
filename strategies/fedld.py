"""FedLD: server aggregation with principal gradients.

Zeng et al., "Tackling Data Heterogeneity in Federated Learning via Loss
Decomposition", MICCAI 2024. The server reduces the aggregation term by replacing
every client's update with its projection-sign pattern on the leading principal
directions of the stacked updates.

For one model tensor, let ``X`` (M x d) stack the client deltas ``g_m = w_m - w``.
With ``(λ_j, v_j)`` the eigenpairs of ``XᵀX / M`` (``v_j`` are the right singular
vectors of ``X``), ``k = max(1, ⌊ρ·M⌋)`` and ``p_m`` the client weights::

    r_m   = ‖g_m‖ · Σ_{j≤k} (λ_j / Σ_i λ_i) · sign⟨g_m, v_j⟩ · v_j     (Σ_i over all i)
    w_new = w + server_lr · Σ_m p_m r_m

Computation never forms a d x d matrix nor an SVD of ``X``: with ``H = XXᵀ = U diag(μ)
Uᵀ`` (M x M, float64), ``v_j = Xᵀu_j / √μ_j`` and ``⟨g_m, v_j⟩ = √μ_j · U[m, j]``, so the
update is ``Xᵀa`` with ``a = Σ_j u_j · √μ_j · b_j / tr(H)`` and ``b_j = Σ_m p_m ‖g_m‖
sign(√μ_j U[m, j])``. The 1/M scaling cancels in ``λ_j / Σλ`` and in ``v_j``; client
weights enter only the average (the directions use equal weights, as in the authors'
code). Cost: O(M²d) time, O(M²) extra memory besides a fixed ~2 MiB block buffer:
``H`` and ``Xᵀa`` are accumulated over column blocks of float64 deltas.

Conventions
-----------
- ``sign(0) = 0``: a client orthogonal to ``v_j`` contributes nothing along it; any
  projection with ``|⟨g_m, v_j⟩| ≤ 1e-9·‖g_m‖`` counts as zero so round-off cannot
  pick a sign. ``+1`` would not do: ``sign⟨g, v⟩·v`` is invariant under ``v → -v``
  (the eigenvector sign ambiguity cancels) only if sign is odd, which needs sign(0)=0.
  Client order then does not matter either (up to round-off).
- Directions with ``μ_j ≤ 1e-12·μ_1`` carry a weight below 1e-12 and are skipped, so
  rank deficiency (``M > d``, identical deltas) and the ties among zero eigenvalues are
  harmless. Ties among the *kept* non-zero eigenvalues (or at the k-th) leave the basis
  inside that eigenspace arbitrary and the sign pattern is not rotation invariant:
  the result is then whatever LAPACK's ``eigh`` returns, as in the authors' code.
  Random float deltas have distinct eigenvalues with probability one.

Fallbacks and buffers (:func:`aggregate_principal`)
---------------------------------------------------
- Plain weighted mean of the clients' values (FedAvg's arithmetic, bit for bit when
  ``server_lr = 1``), stepped by ``server_lr``: warm-up rounds, a single client (where
  FedLD is the mean: r_1 = ‖g‖·g/‖g‖), one-element tensors (FedLD is the mean there
  too: r_m = |g_m|·sign(g_m)). All-zero deltas keep the current tensor exactly.
- *Statistics* are never put through the eigen step and never scaled by
  ``server_lr``: integer/bool arrays (e.g. ``num_batches_tracked``) become the weighted
  mean rounded to the nearest integer in their own dtype (FedAvg would return
  float64); float arrays whose key contains a ``mean_only`` pattern (default
  ``running_mean``, ``running_var``) become the plain weighted mean. Running
  statistics describe the data, not a descent direction, and sign-projecting them
  can make a variance negative. Other float buffers are treated like parameters.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from numpy.typing import NDArray

from fedsim.errors import AggregationError, ConfigError
from strategies.records import array_view

__all__ = [
    "DEFAULT_MEAN_ONLY",
    "FedLD",
    "aggregate_principal",
    "num_directions",
    "principal_gradient",
]

logger = logging.getLogger(__name__)

DEFAULT_MEAN_ONLY: tuple[str, ...] = ("running_mean", "running_var")
_BLOCK_ELEMENTS = 1 << 18  # float64 block buffer of 2 MiB, kept in cache
_EIGEN_RTOL = 1e-12
_ZERO_PROJECTION_RTOL = 1e-9

BlockFill = Callable[[int, int], NDArray[np.float64]]

# --------------------------------------------------------------------------- maths


def num_directions(num_clients: int, keep_ratio: float) -> int:
    """Return ``k = max(1, ⌊keep_ratio · num_clients⌋)`` (1e-9 guards float round-off)."""
    return max(1, math.floor(keep_ratio * num_clients + 1e-9))


def _check_keep_ratio(keep_ratio: float) -> None:
    if not 0.0 < keep_ratio <= 1.0:
        raise AggregationError(f"keep_ratio must lie in (0, 1], got {keep_ratio!r}")


def _probabilities(weights: Iterable[float] | None, num_clients: int) -> list[float]:
    """Normalise weights as FedAvg does (Python floats keep float32 sums float32)."""
    if weights is None:
        return [1.0 / num_clients] * num_clients
    values = [float(w) for w in weights]  # also takes numpy arrays
    if len(values) != num_clients:
        raise AggregationError(f"expected {num_clients} weights, got {len(values)}")
    if not all(math.isfinite(w) and w >= 0.0 for w in values) or sum(values) <= 0.0:
        raise AggregationError(f"weights must be finite, >= 0 and not all 0; got {values}")
    total = sum(values)
    return [w / total for w in values]


def _combination(
    gram: NDArray[np.float64], keep_ratio: float, probs: NDArray[np.float64]
) -> NDArray[np.float64] | None:
    """Return ``a`` with aggregated update ``Xᵀa`` from ``H = XXᵀ``; None if ``X = 0``."""
    total = float(np.trace(gram))
    if total <= 0.0:
        return None
    mu, u = np.linalg.eigh(gram)
    mu, u = mu[::-1], u[:, ::-1]  # descending
    k = num_directions(gram.shape[0], keep_ratio)
    live = mu[:k] > _EIGEN_RTOL * mu[0]
    sqrt_mu = np.sqrt(mu[:k][live])
    u_k = u[:, :k][:, live]
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    projections = u_k * sqrt_mu  # ⟨g_m, v_j⟩
    signs = np.sign(projections)
    signs[np.abs(projections) <= _ZERO_PROJECTION_RTOL * norms[:, None]] = 0.0
    b = (probs * norms) @ signs
    return np.asarray(u_k @ (sqrt_mu * b / total), dtype=np.float64)


def _block_width(num_clients: int) -> int:
    return max(1024, _BLOCK_ELEMENTS // num_clients)


def _blocks(size: int, width: int) -> Iterator[tuple[int, int]]:
    for start in range(0, size, width):
        yield start, min(start + width, size)


def _coefficients(
    fill: BlockFill, size: int, probs: Sequence[float], keep_ratio: float
) -> NDArray[np.float64] | None:
    """``a`` with averaged replacement ``Xᵀa``; None when ``X = 0``.

    ``fill(start, stop)`` returns the float64 delta block ``X[:, start:stop]``; the Gram
    matrix is accumulated block by block so no copy of ``X`` is ever alive.
    """
    num_clients = len(probs)
    gram = np.zeros((num_clients, num_clients))
    for start, stop in _blocks(size, _block_width(num_clients)):
        block = fill(start, stop)
        gram += block @ block.T
    if not np.all(np.isfinite(gram)):
        raise AggregationError("client deltas contain NaN/Inf or overflow float64")
    return _combination(gram, keep_ratio, np.asarray(probs))


def principal_gradient(
    deltas: NDArray[Any], keep_ratio: float = 0.8, weights: Iterable[float] | None = None
) -> NDArray[np.float64]:
    """Average FedLD replacement of the rows of ``deltas`` (before ``server_lr``).

    Parameters
    ----------
    deltas : ndarray, shape (M, d)
        Client deltas ``g_m = w_m - w``, one per row, any real dtype.
    keep_ratio : float
        ρ in (0, 1]; ``k = max(1, ⌊ρM⌋)`` leading directions are kept.
    weights : sequence of float, optional
        Non-negative client weights for the average (normalised); equal if None.

    Returns
    -------
    ndarray, shape (d,), float64
        ``Σ_m p_m r_m`` (see the module docstring); the single row when M = 1 and
        zeros when all deltas are zero.

    Raises
    ------
    AggregationError
        If ``deltas`` is not 2-D with M ≥ 1, is non-finite, or an option is invalid.
    """
    x = np.asarray(deltas)
    if x.ndim != 2 or x.shape[0] == 0:
        raise AggregationError(f"deltas must have shape (M >= 1, d), got {x.shape}")
    _check_keep_ratio(keep_ratio)
    num_clients, size = x.shape
    probs = _probabilities(weights, num_clients)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    if num_clients == 1:
        if not np.all(np.isfinite(x)):
            raise AggregationError("client deltas contain NaN/Inf")
        return x[0].astype(np.float64)
    width = _block_width(num_clients)
    buffer = None if x.dtype == np.float64 else np.empty((num_clients, min(size, width)))

    def fill(start: int, stop: int) -> NDArray[np.float64]:
        if buffer is None:
            return np.asarray(x[:, start:stop])
        block = buffer[:, : stop - start]
        np.copyto(block, x[:, start:stop])
        return block

    out = np.zeros(size)
    a = _coefficients(fill, size, probs, keep_ratio)
    if a is not None:
        for start, stop in _blocks(size, width):
            np.matmul(a, fill(start, stop), out=out[start:stop])
    return out


def _weighted_sum(arrays: Sequence[NDArray[Any]], probs: Sequence[float]) -> NDArray[Any]:
    """``Σ p_m a_m`` with FedAvg's arithmetic and order (bit-identical results)."""
    acc = arrays[0] * probs[0]
    for array, p in zip(arrays[1:], probs[1:], strict=True):
        acc += array * p
    return acc


def _statistic(arrays: Sequence[NDArray[Any]], probs: Sequence[float], dtype: Any) -> NDArray[Any]:
    if np.issubdtype(dtype, np.inexact):
        return np.asarray(_weighted_sum(arrays, probs), dtype=dtype)
    mean = _weighted_sum([np.asarray(a, dtype=np.float64) for a in arrays], probs)
    return np.asarray(np.rint(mean)).astype(dtype)


def _mean_update(
    current: NDArray[Any], arrays: Sequence[NDArray[Any]], probs: Sequence[float], lr: float
) -> NDArray[Any]:
    mean = _weighted_sum(arrays, probs)
    if lr != 1.0:
        mean = current + lr * (mean.astype(np.float64) - current)
    return np.asarray(mean, dtype=current.dtype)


def _principal_tensor(
    current: NDArray[Any],
    arrays: Sequence[NDArray[Any]],
    probs: Sequence[float],
    keep_ratio: float,
    lr: float,
) -> NDArray[Any]:
    flats = [a.reshape(-1) for a in arrays]
    current_flat = current.reshape(-1)
    width = _block_width(len(flats))
    buffer = np.empty((len(flats), min(current.size, width)))
    base = np.empty(min(current.size, width))

    def load(start: int, stop: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        block, w = buffer[:, : stop - start], base[: stop - start]
        for row, flat in zip(block, flats, strict=True):
            row[...] = flat[start:stop]
        w[...] = current_flat[start:stop]
        return block, w

    def deltas(start: int, stop: int) -> NDArray[np.float64]:
        block, w = load(start, stop)
        block -= w
        return block

    a = _coefficients(deltas, current.size, probs, keep_ratio)
    if a is None:
        return current.copy()
    # w + lr·Xᵀa = (1 - lr·Σa)·w + lr·Σ_m a_m w_m: raw client values spare a subtraction
    # per entry; the cancellation error, ~eps·|w|·(1 + Σ|a_m|) with |a_m| ≤ √k, is of the
    # order of rounding the result itself.
    keep = 1.0 - lr * float(a.sum())
    out = np.empty(current.size, dtype=current.dtype)
    for start, stop in _blocks(current.size, width):
        block, w = load(start, stop)
        update = a @ block
        update *= lr
        w *= keep
        update += w
        out[start:stop] = update
    return out.reshape(current.shape)


def aggregate_principal(
    current: Mapping[str, NDArray[Any]],
    client_arrays: Sequence[Mapping[str, NDArray[Any]]],
    weights: Iterable[float] | None = None,
    *,
    keep_ratio: float = 0.8,
    server_lr: float = 1.0,
    mean_only: Iterable[str] = DEFAULT_MEAN_ONLY,
    principal: bool = True,
) -> dict[str, NDArray[Any]]:
    """FedLD-aggregate client models tensor by tensor (see the module docstring).

    Parameters
    ----------
    current : mapping of str to ndarray
        Global arrays the clients started from; defines keys, shapes and dtypes.
    client_arrays : sequence of mappings of str to ndarray
        One mapping per client with exactly the keys and shapes of ``current``.
        Values are fetched once per key, so lazy mappings stream one tensor at a time.
    weights : sequence of float, optional
        Non-negative client weights (normalised); equal if None.
    keep_ratio : float
        ρ in (0, 1] for the eigen step.
    server_lr : float
        Server step on parameters: ``w + server_lr · update`` (statistics excluded).
    mean_only : iterable of str
        Key substrings of float statistics that always take the plain weighted mean.
    principal : bool
        False for warm-up rounds: every parameter takes the plain weighted mean.

    Returns
    -------
    dict of str to ndarray
        New global arrays, same keys (order of ``current``), shapes and dtypes.

    Raises
    ------
    AggregationError
        If there are no clients, keys or shapes differ, values are non-finite, or an
        option is invalid.
    """
    _check_keep_ratio(keep_ratio)
    if not math.isfinite(server_lr):
        raise AggregationError(f"server_lr must be finite, got {server_lr!r}")
    if not client_arrays:
        raise AggregationError("no client arrays to aggregate")
    probs = _probabilities(weights, len(client_arrays))
    patterns = tuple(mean_only)
    for index, client in enumerate(client_arrays):
        if set(client) != set(current):
            raise AggregationError(
                f"client {index} keys differ from the global arrays: missing "
                f"{sorted(set(current) - set(client))}, extra {sorted(set(client) - set(current))}"
            )
    result: dict[str, NDArray[Any]] = {}
    for key, value in current.items():
        cur = np.asarray(value)
        arrays = [np.asarray(client[key]) for client in client_arrays]
        for index, array in enumerate(arrays):
            if array.shape != cur.shape:
                raise AggregationError(
                    f"client {index} sent {key!r} with shape {array.shape}, expected {cur.shape}"
                )
        if not np.issubdtype(cur.dtype, np.floating) or any(p in key for p in patterns):
            new = _statistic(arrays, probs, cur.dtype)
        elif not principal or len(arrays) == 1 or cur.size <= 1:
            new = _mean_update(cur, arrays, probs, server_lr)
        else:
            new = _principal_tensor(cur, arrays, probs, keep_ratio, server_lr)
        if np.issubdtype(new.dtype, np.inexact) and not np.all(np.isfinite(new)):
            raise AggregationError(f"aggregating {key!r} gave NaN/Inf; check client values")
        result[key] = new
    return result


# ---------------------------------------------------------------------- Flower glue

class _RecordView(Mapping[str, NDArray[Any]]):
    """Lazy numpy view of an ArrayRecord: each value is decoded when it is read."""

    def __init__(self, record: ArrayRecord) -> None:
        self._record = record

    def __getitem__(self, key: str) -> NDArray[Any]:
        return array_view(self._record[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._record)

    def __len__(self) -> int:
        return len(self._record)


def _reply_problem(
    content: RecordDict, current: Mapping[str, NDArray[Any]], weighted_by_key: str
) -> str | None:
    """Why a reply cannot be aggregated, or None when it can."""
    if len(content.array_records) != 1 or len(content.metric_records) != 1:
        return "expected exactly one ArrayRecord and one MetricRecord"
    weight = next(iter(content.metric_records.values())).get(weighted_by_key)
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        return f"metric {weighted_by_key!r} missing or not a number"
    if not (math.isfinite(weight) and weight > 0):
        return f"metric {weighted_by_key!r} = {weight} is not a positive number"
    record = next(iter(content.array_records.values()))
    if set(record) != set(current):
        missing, extra = sorted(set(current) - set(record)), sorted(set(record) - set(current))
        return f"array keys differ from the global arrays (missing {missing}, extra {extra})"
    for key, expected in current.items():
        array = array_view(record[key])
        if array.shape != expected.shape:
            return f"{key!r} has shape {array.shape}, expected {expected.shape}"
        if np.issubdtype(array.dtype, np.inexact) and not np.all(np.isfinite(array)):
            return f"{key!r} contains NaN/Inf"
    return None


def _check_options(keep_ratio: float, server_lr: float, weighting: str, warmup_rounds: int) -> None:
    if not 0.0 < keep_ratio <= 1.0:
        raise ConfigError(f"FedLD keep_ratio must lie in (0, 1], got {keep_ratio!r}")
    if not (math.isfinite(server_lr) and server_lr > 0.0):
        raise ConfigError(f"FedLD server_lr must be a positive number, got {server_lr!r}")
    if weighting not in ("equal", "num-examples"):
        raise ConfigError(f"FedLD weighting must be 'equal' or 'num-examples', got {weighting!r}")
    if isinstance(warmup_rounds, bool) or not isinstance(warmup_rounds, int) or warmup_rounds < 0:
        raise ConfigError(f"FedLD warmup_rounds must be an integer >= 0, got {warmup_rounds!r}")


class FedLD(FedAvg):
    """FedAvg with FedLD's principal-gradient aggregation (module docstring for maths).

    Parameters
    ----------
    keep_ratio : float (default: 0.8)
        ρ in (0, 1]: fraction of principal directions kept, at least one.
    server_lr : float (default: 1.0)
        Server learning rate applied to the aggregated parameter update.
    weighting : {"equal", "num-examples"} (default: "equal")
        Client weights of the average: equal (authors' code) or ``weighted_by_key``.
    warmup_rounds : int (default: 1)
        Rounds ``≤ warmup_rounds`` take the plain weighted mean (authors: 1).
    mean_only : iterable of str (default: ``DEFAULT_MEAN_ONLY``)
        Key substrings of float buffers that always take the plain weighted mean.
    **FedAvg options
        ``fraction_train`` … ``evaluate_metrics_aggr_fn`` as in Flower's FedAvg.

    Notes
    -----
    ``configure_train`` remembers the arrays it sends; ``aggregate_train`` needs them to
    form deltas, so whichever clients reply in a round (partial participation) are
    compared with the model they were sent. Before FedAvg's reply checks, a reply is
    dropped, logged and counted if its arrays hold NaN/Inf, its keys or shapes differ
    from the global arrays', or its ``weighted_by_key`` metric (needed by the metrics
    average even with equal weighting) is missing or not positive. Error replies are
    left to FedAvg's logging and not counted. The returned MetricRecord adds
    ``fedld-dropped`` and ``fedld-usable``; with no usable reply the arrays are None
    and the round keeps the current model. With ``weighting="num-examples"`` a
    warm-up round returns exactly FedAvg's arrays. Reply arrays are read as zero-copy
    views of their ``.npy`` bytes (``Array.numpy()`` otherwise).
    """

    def __init__(
        self,
        *,
        keep_ratio: float = 0.8,
        server_lr: float = 1.0,
        weighting: Literal["equal", "num-examples"] = "equal",
        warmup_rounds: int = 1,
        mean_only: Iterable[str] = DEFAULT_MEAN_ONLY,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        weighted_by_key: str = "num-examples",
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord] | None = None,
        evaluate_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord] | None = None,
    ) -> None:
        _check_options(keep_ratio, server_lr, weighting, warmup_rounds)
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=min_train_nodes,
            min_evaluate_nodes=min_evaluate_nodes,
            min_available_nodes=min_available_nodes,
            weighted_by_key=weighted_by_key,
            arrayrecord_key=arrayrecord_key,
            configrecord_key=configrecord_key,
            train_metrics_aggr_fn=train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn,
        )
        self.keep_ratio = keep_ratio
        self.server_lr = server_lr
        self.weighting = weighting
        self.warmup_rounds = warmup_rounds
        self.mean_only = tuple(mean_only)
        self._sent: tuple[int, ArrayRecord] | None = None

    def summary(self) -> None:
        """Log FedAvg's summary and the FedLD options."""
        super().summary()
        logger.info(
            "FedLD: keep_ratio=%s server_lr=%s weighting=%s warmup_rounds=%d mean_only=%s",
            self.keep_ratio, self.server_lr, self.weighting, self.warmup_rounds, self.mean_only,
        )  # fmt: skip

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global arrays of this round, then configure as FedAvg."""
        self._sent = (server_round, arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Drop unusable replies, then aggregate the rest with FedLD."""
        if self._sent is None or self._sent[0] != server_round:
            raise AggregationError(
                f"FedLD.aggregate_train(round {server_round}) needs the arrays sent by "
                "configure_train for that round; call configure_train first"
            )
        current = dict(_RecordView(self._sent[1]))
        kept, dropped = self._screen(replies, current)
        valid, _ = self._check_and_log_replies(kept, is_train=True)
        if not valid:
            logger.warning(
                "FedLD: no usable reply in round %d (%d dropped); keeping the current model",
                server_round,
                dropped,
            )
            return None, MetricRecord({"fedld-dropped": dropped, "fedld-usable": 0})
        contents = [msg.content for msg in valid]
        aggregated = aggregate_principal(
            current,
            [_RecordView(next(iter(c.array_records.values()))) for c in contents],
            self._weights(contents),
            keep_ratio=self.keep_ratio,
            server_lr=self.server_lr,
            mean_only=self.mean_only,
            principal=server_round > self.warmup_rounds,
        )
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key) or MetricRecord()
        metrics["fedld-dropped"] = dropped
        metrics["fedld-usable"] = len(valid)
        arrays = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in aggregated.items()})
        return arrays, metrics

    def _screen(
        self, replies: Iterable[Message], current: Mapping[str, NDArray[Any]]
    ) -> tuple[list[Message], int]:
        """Keep error replies (FedAvg logs them) and usable ones; count the rest."""
        kept: list[Message] = []
        dropped = 0
        for msg in replies:
            problem = None
            if not msg.has_error():
                problem = _reply_problem(msg.content, current, self.weighted_by_key)
            if problem is None:
                kept.append(msg)
            else:
                dropped += 1
                node = msg.metadata.src_node_id
                logger.warning("FedLD: dropped reply from node %d: %s", node, problem)
        return kept, dropped

    def _weights(self, contents: list[RecordDict]) -> list[float] | None:
        if self.weighting == "equal":
            return None
        metrics = [next(iter(c.metric_records.values())) for c in contents]
        return [float(m[self.weighted_by_key]) for m in metrics]  # type: ignore[arg-type]
