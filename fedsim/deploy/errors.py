"""The deployment's error: a step failed in a way the user can fix."""

from __future__ import annotations

from fedsim.errors import FedsimError


class DeployError(FedsimError):
    """A deployment step failed in a way the user can fix (ports, keys, paths)."""
