"""FedLD maths: principal-gradient aggregation of client deltas (pure numpy).

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

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedsim.errors import AggregationError

__all__ = [
    "DEFAULT_MEAN_ONLY",
    "aggregate_principal",
    "num_directions",
    "principal_gradient",
]

DEFAULT_MEAN_ONLY: tuple[str, ...] = ("running_mean", "running_var")
_BLOCK_ELEMENTS = 1 << 18  # float64 block buffer of 2 MiB, kept in cache
_EIGEN_RTOL = 1e-12
_ZERO_PROJECTION_RTOL = 1e-9

BlockFill = Callable[[int, int], NDArray[np.float64]]


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

    Examples
    --------
    With ``keep_ratio = 0.25`` of four clients one direction is kept, ``v = (1, 0)``,
    weighted ``λ_1 / Σλ = 10 / 12``; the clients orthogonal to it contribute nothing:

    >>> import numpy as np
    >>> deltas = np.array([[3.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    >>> np.round(principal_gradient(deltas, keep_ratio=0.25), 4).tolist()
    [0.8333, 0.0]
    >>> principal_gradient(np.array([[0.5, -1.0]])).tolist()  # one client: its delta
    [0.5, -1.0]
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
