"""The root exception. No imports: every package may depend on this module."""

from __future__ import annotations


class HeterarchError(Exception):
    """Root of all heterarch errors."""
