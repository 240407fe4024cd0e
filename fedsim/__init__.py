"""fedsim: federated-learning simulation for heterogeneity and fairness research.

The Python API mirrors the CLI::

    import fedsim
    result = fedsim.run("scenarios/default.toml", overrides={"rounds": 5})
    result.metrics          # long-form pandas DataFrame
    result.summary["final"]["eval-acc"]
"""

from __future__ import annotations

from pathlib import Path as _Path
from typing import TYPE_CHECKING, Any

from fedsim.version import __version__

# fedsim's subpackages clients/, strategies/ and fairness/ sit beside this folder in the
# source tree and are installed inside it (pyproject's package-dir). Where fedsim is
# imported straight from a source tree -- a Flower FAB unpacked by `flwr run` or a
# SuperNode, or a checkout on PYTHONPATH -- they are found beside it. An installed fedsim
# has them inside and never looks beside itself.
_here = _Path(__file__).resolve().parent
if not (_here / "clients").is_dir() and (_here.parent / "clients" / "__init__.py").is_file():
    __path__.append(str(_here.parent))  # noqa: F821 (module attribute of a package)

if TYPE_CHECKING:
    from fedsim.runner import RunResult


def run(*args: Any, **kwargs: Any) -> RunResult:
    """Run a scenario; see :func:`fedsim.runner.run`.

    Examples
    --------
    >>> import fedsim
    >>> result = fedsim.run(
    ...     "scenarios/default.toml",
    ...     overrides={"rounds": 1, "partition.num_clients": 2, "data.num_samples": 200,
    ...                "fairness.enabled": False},
    ... )
    >>> result.summary["rounds"]
    1
    >>> 0.0 <= result.summary["final"]["eval-acc"] <= 1.0
    True
    """
    # Imported when called: `import fedsim` stays cheap (no torch, Flower, pandas).
    from fedsim.runner import run as _run

    return _run(*args, **kwargs)


def resume(*args: Any, **kwargs: Any) -> RunResult:
    """Continue a checkpointed run; see :func:`fedsim.runner.resume`."""
    # Imported when called, as in run(): start-up time of `import fedsim`.
    from fedsim.runner import resume as _resume

    return _resume(*args, **kwargs)


__all__ = ["__version__", "resume", "run"]
