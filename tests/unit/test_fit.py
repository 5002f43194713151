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


def cluster_node(
    name: str, allocatable: dict[str, str], taints: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {}},
        "spec": {"taints": taints or []},
        "status": {"allocatable": allocatable},
    }


GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
# The local cluster's nodes (e2e/nodes.yaml): a CPU node and a MIG node have no nvidia.com/gpu.
CLUSTER = [
    cluster_node("cpu-0", {"cpu": "32", "memory": "64Gi"}),
    cluster_node(
        "gpu-a100-mig-0", {"cpu": "96", "memory": "1Ti", "nvidia.com/mig-1g.10gb": "7"}, [GPU_TAINT]
    ),
    cluster_node("gpu-h100-0", {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": "8"}, [GPU_TAINT]),
    cluster_node("gpu-h100-1", {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": "8"}, [GPU_TAINT]),
    cluster_node("gpu-l4-0", {"cpu": "48", "memory": "192Gi", "nvidia.com/gpu": "4"}, [GPU_TAINT]),
]


def test_too_many_gpus_names_only_nodes_that_have_them() -> None:
    # It used to say "(cpu-0, gpu-a100-mig-0, gpu-h100-0 and 2 more)".
    advice = check_fit(pod(9), CLUSTER).advice()
    assert advice == (
        "9 nvidia.com/gpu requested, but the largest node that could take the step has 8 "
        "allocatable (gpu-h100-0, gpu-h100-1; 1 more with less): request at most 8, or add "
        "nodes with more"
    )


def test_a_resource_no_node_has_says_so() -> None:
    spec = {"containers": [{"resources": {"limits": {"example.com/fpga": "1"}}}]}
    advice = check_fit(spec, CLUSTER[:1]).advice()
    assert "no node that could take the step has any example.com/fpga" in advice


def test_memory_is_written_as_users_write_it() -> None:
    # It used to be "6.87195e+10 memory requested, ... has 2.51713e+10 allocatable".
    nodes = [
        cluster_node("small-0", {"cpu": "8", "memory": "24580372Ki"}),
        cluster_node("small-1", {"cpu": "8", "memory": "16Gi"}),
    ]
    spec = {"containers": [{"resources": {"limits": {"memory": "64Gi"}}}]}
    verdict = check_fit(spec, nodes)
    assert verdict.advice() == (
        "64GiB memory requested, but the largest node that could take the step has 23.4GiB "
        "allocatable (small-0; 1 more with less): request at most 23.4GiB, or add nodes with more"
    )
    assert "small-1: memory requested 64GiB, allocatable 16GiB" in verdict.reasons
    decimal = {"containers": [{"resources": {"limits": {"memory": "64G", "cpu": "500m"}}}]}
    assert check_fit(decimal, nodes).advice().startswith("64GB memory requested")
    cpus = {"containers": [{"resources": {"requests": {"cpu": "8500m"}}}]}
    assert check_fit(cpus, nodes).advice().startswith("8.5 cpu requested")


def test_an_untolerated_taint_gets_the_toleration_that_matches_it() -> None:
    # It used to say "or leave gpu_tolerations on" when gpu_tolerations was on and the taint
    # was another one.
    real = {"key": "k8s-step-operator.io/real-node", "value": "true", "effect": "NoSchedule"}
    nodes = [cluster_node("real-node-0", {"cpu": "4", "nvidia.com/gpu": "8"}, [GPU_TAINT, real])]
    advice = check_fit(pod(1), nodes).advice()
    assert advice == (
        "the nodes that match the step's selectors (real-node-0) carry the taint "
        "k8s-step-operator.io/real-node=true:NoSchedule, which the step does not tolerate: add "
        "the toleration {key: k8s-step-operator.io/real-node, operator: Equal, value: true, "
        "effect: NoSchedule} to settings.tolerations"
    )
    assert "gpu_tolerations" not in advice


def test_a_gpu_taint_says_why_gpu_tolerations_did_not_add_it() -> None:
    # GPUs requested and the taint not tolerated: gpu_tolerations was turned off.
    advice = check_fit(pod(1, H100, tolerations=[]), NODES).advice()
    assert "gpu_tolerations is off, and the step requests nvidia GPUs: turn it on" in advice
    # No GPU requested: gpu_tolerations adds nothing, whatever its value.
    cpu_step = {"nodeSelector": H100, "containers": [{"resources": {"limits": {"cpu": "1"}}}]}
    advice = check_fit(cpu_step, NODES).advice()
    assert "only for a step that requests nvidia GPUs, and this one requests none" in advice
    assert "{key: nvidia.com/gpu, operator: Equal, value: present, effect: NoSchedule}" in advice
