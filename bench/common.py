"""What the benchmark scripts of bench/ share, so that each figure is taken the same way in all.

The scripts run as files (``python bench/run.py``), so this module is imported from their
directory as ``common``. ``zenml_bench.py`` and ``zenml_server_bench.py`` run under ZenML's
environment, the others under the project's: this module imports only what both have (the
standard library, ``kubernetes`` and ``k8s_step_operator``). A script puts the checkout's root
first on ``sys.path`` before importing it, so that the checkout's ``k8s_step_operator`` is the
one used.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from kubernetes import client as k8s

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


def new_namespace(
    admin: k8s.ApiClient, prefix: str, labels: Mapping[str, str] | None = None
) -> str:
    """A new namespace ``<prefix>-<6 hex digits>``, once its ``default`` service account exists.

    Pods cannot be created in a namespace before its service account controller has made that
    account; after 30 s the namespace is returned anyway.

    Args:
        admin: An API client allowed to create namespaces.
        prefix: The name's beginning.
        labels: The namespace's labels, if any.
    """
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    core = k8s.CoreV1Api(admin)
    metadata: dict[str, object] = {"name": name}
    if labels:
        metadata["labels"] = dict(labels)
    core.create_namespace({"metadata": metadata})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(
            sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items
        ):
            break
        time.sleep(0.2)
    return name


@contextlib.contextmanager
def temporary_namespace(
    admin: k8s.ApiClient, prefix: str, labels: Mapping[str, str] | None = None
) -> Iterator[str]:
    """``new_namespace``, deleted on leaving (in the background: not waited for)."""
    name = new_namespace(admin, prefix, labels)
    try:
        yield name
    finally:
        k8s.CoreV1Api(admin).delete_namespace(name, propagation_policy="Background")
