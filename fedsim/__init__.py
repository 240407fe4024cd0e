"""fedsim: federated-learning simulation for heterogeneity and fairness research.

The Python API mirrors the CLI::

    import fedsim
    result = fedsim.run("scenarios/default.toml", overrides={"rounds": 5})
    result.metrics          # long-form pandas DataFrame
    result.summary["final"]["eval-acc"]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from fedsim.runner import RunResult


def run(*args: Any, **kwargs: Any) -> RunResult:
    """Run a scenario; see :func:`fedsim.runner.run`."""
    from fedsim.runner import run as _run

    return _run(*args, **kwargs)


def resume(*args: Any, **kwargs: Any) -> RunResult:
    """Continue a checkpointed run; see :func:`fedsim.checkpoint.resume`."""
    from fedsim.checkpoint import resume as _resume

    return _resume(*args, **kwargs)


__all__ = ["__version__", "resume", "run"]
