"""A pipeline written for ZenML's own ``kubernetes`` step operator, on ours: its settings objects
are taken as they are, each field lands in the Job where ZenML's operator puts it, and what is
not honoured is refused under ZenML's name with what to use instead, never dropped.

ZenML's real classes are used (``KubernetesStepOperatorSettings``, ``KubernetesPodSettings``,
the Kubernetes client's models, ZenML's settings resolver); the Job is rendered by the real core
with a kubeconfig that points nowhere (nothing is sent). The cluster test that runs one pipeline
on both flavors and compares their Jobs is in ``test_zenml_production.py``.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

zenml = pytest.importorskip("zenml")

from kubernetes.client import (  # noqa: E402
    V1Affinity,
    V1NodeAffinity,
    V1NodeSelector,
    V1NodeSelectorRequirement,
    V1NodeSelectorTerm,
    V1Toleration,
    V1Volume,
    V1VolumeMount,
)
from zenml.config import ResourceSettings as ZenMLResources  # noqa: E402
from zenml.config.settings_resolver import SettingsResolver  # noqa: E402
from zenml.enums import StackComponentType  # noqa: E402
from zenml.exceptions import SettingsResolvingError  # noqa: E402
from zenml.integrations.kubernetes.flavors import (  # noqa: E402
    KubernetesStepOperatorSettings,
)
from zenml.integrations.kubernetes.pod_settings import KubernetesPodSettings  # noqa: E402

from k8s_step_operator import ConfigurationError  # noqa: E402
from k8s_step_operator.integrations.zenml import (  # noqa: E402
    KubernetesJobStepOperator,
    KubernetesJobStepOperatorConfig,
    KubernetesJobStepOperatorSettings,
    _compat,
)
from tests.zenml_integration.test_zenml_unit import NOWHERE, step_run_info  # noqa: E402

GPU_AFFINITY = V1Affinity(
    node_affinity=V1NodeAffinity(
        required_during_scheduling_ignored_during_execution=V1NodeSelector(
            node_selector_terms=[
                V1NodeSelectorTerm(
                    match_expressions=[
                        V1NodeSelectorRequirement(
                            key="nvidia.com/gpu.product",
                            operator="In",
                            values=["NVIDIA-H100-80GB-HBM3"],
                        )
                    ]
                )
            ]
        )
    )
)


def theirs(**pod: Any) -> KubernetesStepOperatorSettings:
    """ZenML's own settings object, as a pipeline for its kubernetes operator writes it."""
    fields: dict[str, Any] = {
        "node_selectors": {"pool": "gpu"},
        "affinity": GPU_AFFINITY,
        "tolerations": [
            V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"),
            {
                "key": "spot",
                "operator": "Equal",
                "value": "yes",
                "effect": "NoExecute",
                "tolerationSeconds": 30,
            },
        ],
        "resources": {
            "requests": {"cpu": "2", "memory": "4Gi"},
            "limits": {"memory": "4Gi", "nvidia.com/gpu": "1"},
        },
        "annotations": {"team": "ml"},
        "labels": {"cost-center": "research"},
        "volumes": [
            V1Volume(name="data", persistent_volume_claim={"claimName": "datasets"}),
            {"name": "cache", "emptyDir": {}},
        ],
        "volume_mounts": [
            V1VolumeMount(name="data", mount_path="/data", read_only=True),
            {"name": "cache", "mountPath": "/cache"},
        ],
        "scheduler_name": "default-scheduler",
        "image_pull_secrets": ["regcred"],
        "env": [
            {"name": "EPOCHS", "value": "3"},
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
        ],
        "env_from": [{"secretRef": {"name": "wandb"}}],
        "container_security_context": {"runAsUser": 2000, "allowPrivilegeEscalation": False},
        "additional_pod_spec_args": {
            "priority_class_name": "gpu-high",
            "dns_policy": "ClusterFirst",
            "termination_grace_period_seconds": 60,
        },
    }
    fields.update(pod)
    return KubernetesStepOperatorSettings(
        pod_settings=KubernetesPodSettings(**fields),
        service_account_name="trainer",
        ttl_seconds_after_finished=120,
        active_deadline_seconds=3600,
    )


@pytest.fixture
def kubeconfig(tmp_path: Path) -> str:
    """A kubeconfig whose server nothing listens on: rendering sends nothing."""
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(NOWHERE))
    return str(path)


def resolved(settings: Any) -> KubernetesJobStepOperatorSettings:
    """What ZenML's compiler makes of step settings given under the shortcut key."""
    stack = SimpleNamespace(setting_classes={"step_operator": KubernetesJobStepOperatorSettings})
    result = SettingsResolver(key="step_operator", settings=settings).resolve(stack)  # type: ignore[arg-type]
    assert isinstance(result, KubernetesJobStepOperatorSettings)
    return result


def make_operator(kubeconfig: str, **config: Any) -> KubernetesJobStepOperator:
    now = datetime.now()
    return KubernetesJobStepOperator(
        name="k8s",
        id=uuid.uuid4(),
        config=KubernetesJobStepOperatorConfig(
            namespace="ml", kubeconfig_path=kubeconfig, **config
        ),
        flavor="kubernetes_job",
        type=StackComponentType.STEP_OPERATOR,
        user=None,
        created=now,
        updated=now,
    )


def render(kubeconfig: str, settings: Any, resources: ZenMLResources | None = None) -> Any:
    """The Job our operator builds for a step with these step operator settings."""
    operator = make_operator(kubeconfig)
    data = dict(settings) if not isinstance(settings, dict) else settings
    info = step_run_info(settings={"step_operator:k8s": data}, resources=resources)
    return operator._step_run(info, ["python", "-m", "x"], {"ZENML_STORE_TYPE": "rest"}).job


def test_zenmls_settings_object_lands_where_zenmls_operator_puts_each_field(
    kubeconfig: str,
) -> None:
    settings = resolved(theirs())
    job = render(kubeconfig, settings)
    spec = job["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [
            {
                "matchExpressions": [
                    {
                        "key": "nvidia.com/gpu.product",
                        "operator": "In",
                        "values": ["NVIDIA-H100-80GB-HBM3"],
                    }
                ]
            }
        ]
    }
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert {
        "key": "spot",
        "operator": "Equal",
        "value": "yes",
        "effect": "NoExecute",
        "tolerationSeconds": 30,
    } in pod["tolerations"]
    assert container["resources"]["requests"] == {
        "cpu": "2",
        "memory": "4Gi",
        "nvidia.com/gpu": "1",
    }
    assert container["resources"]["limits"] == {"memory": "4Gi", "nvidia.com/gpu": "1"}
    meta = spec["template"]["metadata"]
    assert meta["annotations"]["team"] == "ml"
    assert meta["labels"]["cost-center"] == "research"
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "datasets"}} in pod["volumes"]
    assert {"name": "cache", "emptyDir": {}} in pod["volumes"]
    assert {"name": "data", "mountPath": "/data", "readOnly": True} in container["volumeMounts"]
    assert {"name": "cache", "mountPath": "/cache"} in container["volumeMounts"]
    assert pod["schedulerName"] == "default-scheduler"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    env = {e["name"]: e for e in container["env"]}
    assert env["EPOCHS"] == {"name": "EPOCHS", "value": "3"}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "token"}
    assert {"secretRef": {"name": "wandb"}} in container["envFrom"]
    assert pod["securityContext"]["runAsUser"] == 2000
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["priorityClassName"] == "gpu-high"
    assert pod["dnsPolicy"] == "ClusterFirst"
    assert pod["terminationGracePeriodSeconds"] == 60
    assert pod["serviceAccountName"] == "trainer"
    assert spec["ttlSecondsAfterFinished"] == 120
    assert spec["activeDeadlineSeconds"] == 3600


def test_zenmls_defaults_ask_for_nothing(kubeconfig: str) -> None:
    settings = resolved(KubernetesStepOperatorSettings())
    job = render(kubeconfig, settings)
    pod = job["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod
    # ZenML's default is no TTL: the Job is kept, as ZenML's own operator keeps it.
    assert "ttlSecondsAfterFinished" not in job["spec"]
    assert "activeDeadlineSeconds" not in job["spec"]


def test_the_same_fields_as_a_mapping_and_from_the_command_line() -> None:
    as_mapping = KubernetesJobStepOperatorSettings(
        pod_settings={"node_selectors": {"pool": "gpu"}, "labels": {"a": "b"}}
    )
    translation = _compat.translate(as_mapping.model_dump(exclude_unset=True))
    assert translation.settings["node_selector"] == {"pool": "gpu"}
    assert translation.settings["pod_labels"] == {"a": "b"}
    # `zenml step-operator register ... --pod_settings='{"node_selectors": {...}}'`
    config = KubernetesJobStepOperatorConfig(pod_settings='{"node_selectors": {"pool": "gpu"}}')
    assert config.pod_settings == {"node_selectors": {"pool": "gpu"}}


def test_resources_in_both_places_must_agree(kubeconfig: str) -> None:
    pod = {"resources": {"requests": {"cpu": "500m"}, "limits": {"nvidia.com/gpu": 2}}}
    job = render(kubeconfig, {"pod_settings": pod}, ZenMLResources(cpu_count=0.5, memory="1GiB"))
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": "2"}
    with pytest.raises(ConfigurationError) as raised:
        render(kubeconfig, {"pod_settings": pod}, ZenMLResources(gpu_count=1))
    assert raised.value.field == "resource_settings.gpu_count"
    assert "pod_settings.resources" in str(raised.value)


def test_mig_amd_and_other_accelerators_become_the_vendor() -> None:
    def gpu(name: str) -> dict[str, Any]:
        t = _compat.translate({"pod_settings": {"resources": {"limits": {name: "1"}}}})
        return {**t.settings, **t.resources}

    assert gpu("nvidia.com/mig-1g.5gb") == {
        "gpu_vendor": "nvidia",
        "mig_profile": "1g.5gb",
        "gpu_count": 1,
    }
    assert gpu("amd.com/gpu")["gpu_vendor"] == "amd"
    assert gpu("example.com/fpga")["gpu_vendor"] == "example.com/fpga"


REFUSED = [
    (
        {"privileged": True},
        "settings.privileged",
        "never runs a privileged container",
    ),
    ({"pod_count": 4, "num_nodes": 2}, "settings.pod_count", "the same number as num_nodes"),
    ({"job_name_prefix": "nightly"}, "settings.job_name_prefix", "labels="),
    (
        {"fail_on_container_waiting_reasons": ["ErrImagePull"]},
        "settings.fail_on_container_waiting_reasons",
        "image_pull_backoff_timeout",
    ),
    ({"max_api_retries": 10}, "settings.max_api_retries", "pending_timeout"),
    ({"api_request_timeout": 5}, "settings.api_request_timeout", "active_deadline_seconds"),
    ({"pod_startup_timeout": 60}, "settings.pod_startup_timeout", "pending_timeout"),
    (
        {"pod_settings": {"host_ipc": True}},
        "settings.pod_settings.host_ipc",
        "shm_size",
    ),
    (
        {"pod_settings": {"container_security_context": {"privileged": True}}},
        "settings.pod_settings.container_security_context.privileged",
        "never runs a privileged container",
    ),
    (
        {"pod_settings": {"container_security_context": {"readOnlyRootFilesystem": True}}},
        "settings.pod_settings.container_security_context.readOnlyRootFilesystem",
        "not supported",
    ),
    (
        {
            "pod_settings": {
                "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]
            }
        },
        "settings.pod_settings.env[0].valueFrom",
        "secretKeyRef",
    ),
    (
        {"pod_settings": {"env_from": [{"configMapRef": {"name": "c"}}]}},
        "settings.pod_settings.env_from[0]",
        "secret_env_from",
    ),
    (
        {"pod_settings": {"resources": {"limits": {"ephemeral-storage": "10Gi"}}}},
        "settings.pod_settings.resources['requests' or 'limits']['ephemeral-storage']",
        "not requested",
    ),
    (
        {
            "pod_settings": {
                "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "2Gi"}}
            }
        },
        "settings.pod_settings.resources['limits']['memory']",
        "requested and limited to the same value",
    ),
    (
        {"pod_settings": {"additional_pod_spec_args": {"host_pid": True}}},
        "settings.pod_settings.additional_pod_spec_args['host_pid']",
        "dns_policy",
    ),
    (
        {"pod_settings": {"additional_pod_spec_args": {"dnsPolicy": "None"}}},
        "settings.pod_settings.additional_pod_spec_args['dnsPolicy']",
        "ignores camelCase keys",
    ),
    (
        {"pod_settings": {"tolerations": [{"key": "a", "operator": "Exists", "value": "v"}]}},
        "settings.pod_settings.tolerations[0].value",
        "no value with operator 'Exists'",
    ),
    (
        {"node_selector": {"pool": "cpu"}, "pod_settings": {"node_selectors": {"pool": "gpu"}}},
        "settings.pod_settings.node_selectors['pool']",
        "node_selector['pool'] has",
    ),
]


def test_zenmls_pod_count_runs_the_step_on_as_many_nodes() -> None:
    settings = KubernetesJobStepOperatorSettings(pod_count=3, gpu_count=8)
    translation = _compat.translate(settings.model_dump(exclude_unset=True))
    assert translation.settings["num_nodes"] == 3
    assert ("num_nodes", "pod_count") in translation.origins
    # ZenML's default asks for nothing; the same number in both names is no contradiction.
    assert "num_nodes" not in _compat.translate({"pod_count": 1}).settings
    assert _compat.translate({"pod_count": 2, "num_nodes": 2}).settings["num_nodes"] == 2


@pytest.mark.parametrize(("given", "field", "instead"), REFUSED)
def test_what_is_not_honoured_is_refused_by_zenmls_name(
    given: dict[str, Any], field: str, instead: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        KubernetesJobStepOperatorSettings(**given)
    assert raised.value.field == field, raised.value
    assert instead in str(raised.value)


def test_a_refusal_stops_zenmls_compilation_with_our_message() -> None:
    with pytest.raises(SettingsResolvingError) as raised:
        resolved(KubernetesStepOperatorSettings(privileged=True))
    cause = raised.value.__context__
    assert isinstance(cause, ConfigurationError)
    assert "settings.privileged" in str(cause)


def test_what_the_job_builder_refuses_is_named_as_zenml_wrote_it(kubeconfig: str) -> None:
    host_path = {"volumes": [{"name": "h", "hostPath": {"path": "/data"}}]}
    with pytest.raises(ConfigurationError) as raised:
        render(kubeconfig, {"pod_settings": host_path})
    assert raised.value.field == "settings.pod_settings.volumes[0].hostPath"
    assert "pod_security_profile" in str(raised.value)
    plain_token = {"env": [{"name": "OK", "value": "1"}, {"name": "HF_TOKEN", "value": "hf_x" * 8}]}
    with pytest.raises(ConfigurationError) as raised:
        render(kubeconfig, {"pod_settings": plain_token})
    assert raised.value.field == "settings.pod_settings.env[1]"
    assert "secret_env" in str(raised.value)
    assert "hf_x" not in str(raised.value)
