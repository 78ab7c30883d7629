"""Worker processes for the bus tests (``heterarch worker`` as a child process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def start_worker(config: Path, pool: str, nats: str) -> subprocess.Popen[bytes]:
    """``heterarch worker --pool POOL`` in a process of its own, output discarded."""
    return subprocess.Popen(
        [sys.executable, "-m", "heterarch.cli", "worker", "--pool", pool, "--config", str(config),
         "--nats", nats], cwd=ROOT, stdout=subprocess.DEVNULL,
    )
