"""The one error type of the actions package."""

from __future__ import annotations


class ActionError(Exception):
    """Why a git action cannot be used.

    The message is meant for users: it names the action (``owner/repo@tag``), the repository URL
    without credentials and the file where relevant, and never holds a password or token.
    """
