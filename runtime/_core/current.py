"""The cell whose handler (or hook) the current task runs: for ``sender`` and self-stop."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cell import ActorCell

#: The cell whose handler the current task is running (for ``sender`` and self-stop).
current_cell: contextvars.ContextVar[ActorCell | None] = contextvars.ContextVar(
    "heterarch_current_cell", default=None
)
