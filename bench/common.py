"""What the benchmark scripts of bench/ share, so that each figure is taken the same way in all.

The scripts run as files (``python bench/run.py``), so this module is imported from their
directory as ``common``. ``zenml_bench.py`` and ``zenml_server_bench.py`` run under ZenML's
environment, the others under the project's: this module imports only what both have (the
standard library, ``kubernetes`` and ``k8s_step_operator``). A script puts the checkout's root
first on ``sys.path`` before importing it, so that the checkout's ``k8s_step_operator`` is the
one used.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def kubeconfig() -> str:
    """The cluster's kubeconfig: ``$KUBECONFIG``, else the local cluster's."""
    return os.environ.get("KUBECONFIG") or str(ROOT / ".cluster" / "kubeconfig")


def summary(values: Sequence[float], *, digits: int = 3, p99: bool = True) -> dict[str, float]:
    """A distribution's ``n``, ``min``, ``p50``, ``p99`` and ``max``, rounded; ``{}`` for none.

    Args:
        values: The figures, in any order.
        digits: The decimal places each figure is rounded to.
        p99: Whether to include ``p99`` (the value at rank ``round(0.99 * (n - 1))``).
    """
    if not values:
        return {}
    ordered = sorted(values)
    figures: dict[str, float] = {
        "n": len(ordered),
        "min": round(ordered[0], digits),
        "p50": round(statistics.median(ordered), digits),
    }
    if p99:
        last = len(ordered) - 1
        figures["p99"] = round(ordered[min(last, round(0.99 * last))], digits)
    figures["max"] = round(ordered[-1], digits)
    return figures
