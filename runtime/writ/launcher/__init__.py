"""The container launcher: one hardened container per invocation, verified, then destroyed."""

from ._launch import Launched, Launcher
from ._spec import DEFAULT_LIMITS, LaunchSpec, effective_limits

__all__ = ["DEFAULT_LIMITS", "LaunchSpec", "Launched", "Launcher", "effective_limits"]
