"""Step functions the end-to-end tests run in real containers (shipped in the Python image)."""

from __future__ import annotations

import os
import sys


def greet() -> None:
    """Print the environment the step was given, line by line."""
    print(f"hello from {os.uname().nodename}", flush=True)
    print(f"STEP_GREETING={os.environ.get('STEP_GREETING', '<unset>')}", flush=True)
    print(f"uid={os.getuid()}", flush=True)


def explode() -> None:
    """Fail with a traceback."""
    print("about to fail", flush=True)
    raise ValueError("the step failed on purpose")


def hog_memory() -> None:
    """Allocate far past a small memory limit."""
    print("allocating", flush=True)
    blocks = []
    for _ in range(64):
        blocks.append(bytearray(16 * 1024 * 1024))
    print(f"allocated {len(blocks) * 16} MiB", file=sys.stderr, flush=True)
