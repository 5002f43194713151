"""Short GPU model names (H100) select every label value of that model through node affinity."""

from __future__ import annotations

from typing import Any

import pytest

from k8s_step_operator import (
    ConfigurationError,
    KubernetesJobStepOperatorSettings,
    ResourceSettings,
    StepConfiguration,
    StepRunInfo,
)
from k8s_step_operator._job.builder import build_job
from k8s_step_operator._runner.fit import fits_somewhere


def job(gpus: int = 1, **settings: Any) -> dict[str, Any]:
    info = StepRunInfo(
        step_run_id="s",
        run_id="r",
        pipeline_step_name="train",
        config=StepConfiguration(resource_settings=ResourceSettings(gpu_count=gpus)),
    )
    return build_job(
        info, ["python"], {}, KubernetesJobStepOperatorSettings(image="x:1", **settings)
    )


def terms(j: dict[str, Any]) -> list[dict[str, Any]]:
    spec = j["spec"]["template"]["spec"]
    required = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    return list(required["nodeSelectorTerms"])


@pytest.mark.parametrize("model", ["H100", "h100"])
def test_short_name_becomes_affinity_over_variants(model: str) -> None:
    j = job(gpu_type=model)
    spec = j["spec"]["template"]["spec"]
    assert "nvidia.com/gpu.product" not in spec.get("nodeSelector", {})
    (term,) = terms(j)
    (expr,) = term["matchExpressions"]
    assert expr["key"] == "nvidia.com/gpu.product" and expr["operator"] == "In"
    assert "NVIDIA-H100-80GB-HBM3" in expr["values"]
    node = {
        "metadata": {"name": "n", "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
        "status": {"allocatable": {"nvidia.com/gpu": "8"}},
    }
    assert fits_somewhere(spec, [node])[0]


def test_full_label_value_stays_a_node_selector() -> None:
    spec = job(gpu_type="NVIDIA-H100-80GB-HBM3")["spec"]["template"]["spec"]
    assert spec["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert "affinity" not in spec


def test_alias_is_anded_into_every_user_term() -> None:
    user = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                ]
            }
        }
    }
    result = terms(job(gpu_type="A100", affinity=user))
    assert len(result) == 2
    for term in result:
        keys = [e["key"] for e in term["matchExpressions"]]
        assert keys == ["zone", "nvidia.com/gpu.product"]


def test_gke_alias() -> None:
    (term,) = terms(job(gpu_type="L4", gpu_label_scheme="gke"))
    assert term["matchExpressions"][0]["values"] == ["nvidia-l4"]


def test_alias_conflicting_with_a_selector_is_refused() -> None:
    with pytest.raises(ConfigurationError) as raised:
        job(gpu_type="H100", node_selector={"nvidia.com/gpu.product": "NVIDIA-L4"})
    assert raised.value.field == "settings.node_selector"
