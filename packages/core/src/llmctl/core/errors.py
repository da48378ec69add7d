"""User-facing errors: one line, exit code 2, never a traceback for a user's mistake."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (file, flag, config key). The CLI prints it on one line and exits 2."""

    exit_code = 2


class PluginError(UserError):
    """A plugin registered something twice or registered something invalid."""


def require_torch(what: str = "this command"):
    """Import torch or raise a UserError saying how to install it (torch is the user's own build)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError(
            f"{what} needs PyTorch, which is not installed: install your build, e.g. "
            "`pip install 'llmctl-core[torch]'` or `pip install torch` (CUDA/NPU users: the build your driver needs)"
        ) from None
    return torch
