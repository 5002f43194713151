"""What the real-node tests share: pods shaped like the library's, and waiting for them.

Pods are plain dicts under Pod Security "restricted" (non-root uid 1000, RuntimeDefault seccomp,
no capabilities, no privilege escalation), placed on the real node by its label and taints.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

REAL_LABEL = "k8s-step-operator.io/real-node"
PYTHON_IMAGE = os.environ.get("K8SSO_PYTHON_IMAGE", "localhost/k8s-step-operator-python:dev")
SHELL_IMAGE = os.environ.get("K8SSO_SHELL_IMAGE", "localhost/k8s-step-operator-shell:dev")
# What a real node needs from a pod besides the GPU pool's placement.
REAL_TOLERATIONS = [
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": REAL_LABEL, "operator": "Exists", "effect": "NoSchedule"},
]
H100_SELECTOR = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", REAL_LABEL: "true"}
TIMEOUT_S = 120.0


def container(
    image: str, command: list[str], *, memory: str = "256Mi", gpus: int = 0
) -> dict[str, Any]:
    limits: dict[str, str] = {"cpu": "500m", "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    return {
        "name": "step",
        "image": image,
        "imagePullPolicy": "Never",
        "command": command,
        "env": [{"name": "STEP_GREETING", "value": "hello from the real node"}],
        "resources": {"requests": {"cpu": "100m", "memory": memory}, "limits": limits},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def pod_spec(ctr: dict[str, Any], *, node_selector: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 5,
        "nodeSelector": node_selector or {REAL_LABEL: "true"},
        "tolerations": REAL_TOLERATIONS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [ctr],
    }


def create_pod(core: Any, ns: str, name: str, spec: dict[str, Any]) -> None:
    core.create_namespaced_pod(
        ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
    )


def wait_until(what: str, fn: Callable[[], Any], timeout: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


def terminated(core: Any, ns: str, name: str) -> Any:
    """Wait for the pod to finish; return (pod, its container's terminated state)."""

    def check() -> Any:
        pod = core.read_namespaced_pod(name, ns)
        for cs in pod.status.container_statuses or []:
            waiting = cs.state.waiting if cs.state else None
            if waiting and waiting.reason in ("ErrImageNeverPull", "CreateContainerError"):
                raise AssertionError(
                    f"pod {name} cannot start: {waiting.reason}: {waiting.message}"
                )
            if pod.status.phase in ("Succeeded", "Failed") and cs.state and cs.state.terminated:
                return pod, cs.state.terminated
        return None

    return wait_until(f"pod {ns}/{name} to finish", check)
