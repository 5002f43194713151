"""The fit check names the setting to change, judged from the nodes that came closest."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from k8s_step_operator._job.quantity import parse_quantity
from k8s_step_operator._runner.fit import check_fit


def node(name: str, labels: dict[str, str], gpus: int, taint: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": [{"key": taint, "value": "present", "effect": "NoSchedule"}]}
        if taint
        else {},
        "status": {"allocatable": {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": str(gpus)}},
    }


H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
NODES = [
    node("h100-0", H100, 8, "nvidia.com/gpu"),
    node("h100-1", H100, 8, "nvidia.com/gpu"),
    node("l4-0", {"nvidia.com/gpu.product": "NVIDIA-L4"}, 4, "nvidia.com/gpu"),
    node("cpu-0", {}, 0),
]
TOLERATE = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def pod(gpus: int, selector: dict[str, str] | None = None, tolerations: Any = TOLERATE) -> Any:
    return {
        "nodeSelector": selector or {},
        "tolerations": tolerations,
        "containers": [{"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
    }


def test_missing_toleration_is_named_with_its_taint_and_nodes() -> None:
    verdict = check_fit(pod(1, H100, tolerations=[]), NODES)
    assert not verdict.fits
    advice = verdict.advice()
    assert "nvidia.com/gpu=present:NoSchedule" in advice
    assert "h100-0, h100-1" in advice
    assert "toleration" in advice


def test_too_many_gpus_names_the_largest_node() -> None:
    advice = check_fit(pod(9, H100), NODES).advice()
    assert "9 nvidia.com/gpu requested" in advice
    assert "has 8 allocatable" in advice
    assert "request at most 8" in advice


def test_a_model_no_node_has_names_the_selector() -> None:
    advice = check_fit(pod(1, {"nvidia.com/gpu.product": "NVIDIA-B200"}), NODES).advice()
    assert "nvidia.com/gpu.product=NVIDIA-B200" in advice
    assert "gpu_type" in advice


def test_the_closest_nodes_decide_the_advice() -> None:
    # No selector: the CPU node is ruled out by capacity, the GPU nodes by their taint. The CPU
    # node came further (it passed the taint filter): capacity is what blocks there.
    verdict = check_fit(pod(1, tolerations=[]), NODES)
    assert "nvidia.com/gpu requested" in verdict.advice()


def test_fitting_pod_has_no_advice() -> None:
    verdict = check_fit(pod(8, H100), NODES)
    assert verdict.fits and verdict.advice() == ""


def test_quantities_the_server_writes() -> None:
    assert parse_quantity("100u") == Decimal("0.0001")
    assert parse_quantity("1500m") == Decimal("1.5")
    assert parse_quantity("16Gi") == 16 * 1024**3
    assert parse_quantity("12e6") == 12_000_000


def test_an_unreadable_node_quantity_never_rules_a_node_out() -> None:
    odd = node("odd", H100, 8, None)
    odd["status"]["allocatable"]["nvidia.com/gpu"] = "lots"
    assert check_fit(pod(4, H100), [odd]).fits
