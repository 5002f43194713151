"""The steps of the demo pipeline: plain functions, run in the container by the entrypoint.

``python -m k8s_step_operator.entrypoint ... --step_source examples.steps:train`` imports and
calls one of them; what they print is streamed back to the caller's log.
"""

from __future__ import annotations

import os
import random
import time


def prepare() -> None:
    """Make a small synthetic data set and report its shape."""
    rng = random.Random(int(os.environ.get("DEMO_SEED", "7")))
    rows = [[rng.gauss(0, 1) for _ in range(8)] for _ in range(1000)]
    mean = sum(sum(r) for r in rows) / (len(rows) * 8)
    print(f"prepared {len(rows)} rows x 8 features (mean {mean:+.3f})", flush=True)


def train() -> None:
    """Fit a one-parameter model by gradient descent, printing each epoch."""
    epochs = int(os.environ.get("DEMO_EPOCHS", "5"))
    gpus = os.environ.get("DEMO_GPUS", "0")
    print(f"training on {gpus} GPU(s) requested from Kubernetes", flush=True)
    rng = random.Random(1)
    xs = [rng.uniform(-1, 1) for _ in range(200)]
    ys = [3.0 * x + rng.gauss(0, 0.1) for x in xs]
    w = 0.0
    for epoch in range(1, epochs + 1):
        grad = sum(2 * (w * x - y) * x for x, y in zip(xs, ys, strict=True)) / len(xs)
        w -= 0.5 * grad
        loss = sum((w * x - y) ** 2 for x, y in zip(xs, ys, strict=True)) / len(xs)
        print(f"epoch {epoch}/{epochs}: w={w:.4f} loss={loss:.5f}", flush=True)
        time.sleep(0.2)
    print(f"done: learned w={w:.3f} (true 3.0)", flush=True)


def fail() -> None:
    """A step that fails, to show how a failure is reported."""
    raise RuntimeError("this step fails on purpose")
