"""Every mapping from settings to the Job, and every refusal before anything is sent."""

import json
from typing import Any

import pytest

from k8s_step_operator import (
    GPU_LABEL_SCHEMES,
    ConfigurationError,
    GPULabelScheme,
    KubernetesJobStepOperator,
    KubernetesJobStepOperatorConfig,
    KubernetesJobStepOperatorSettings,
    PipelineConfiguration,
    ResourceSettings,
    SecretKeyRef,
    StepConfiguration,
    StepRunInfo,
    Toleration,
    build_job,
    job_name,
)

S = KubernetesJobStepOperatorSettings


def info(resources: ResourceSettings | None = None, **kw: Any) -> StepRunInfo:
    fields: dict[str, Any] = {
        "step_run_id": "step-run-1",
        "run_id": "run-1",
        "run_name": "nightly",
        "pipeline_step_name": "train",
        "pipeline": PipelineConfiguration(name="pipe"),
        "config": StepConfiguration(resource_settings=resources or ResourceSettings()),
        "images": {"default": "python:3.11"},
    }
    fields.update(kw)
    return StepRunInfo(**fields)


def build(
    settings: S | dict[str, Any] | None = None,
    resources: ResourceSettings | None = None,
    env: dict[str, str] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    job = build_job(
        info(resources, **kw.pop("info", {})),
        kw.pop("command", ["python", "-m", "step"]),
        env or {},
        settings if isinstance(settings, S) else S(**(settings or {})),
        **kw,
    )
    json.dumps(job)  # JSON-ready
    return job


def pod(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def container(job: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = pod(job)["containers"][0]
    return c


def refused(field: str, **kw: Any) -> ConfigurationError:
    # Settings given as a mapping are built inside: a bad field is refused at construction.
    with pytest.raises(ConfigurationError) as exc:
        build(**kw)
    assert exc.value.field == field, exc.value
    assert exc.value.accepted
    return exc.value


# --- the Job's frame -------------------------------------------------------------------------


def test_frame() -> None:
    job = build()
    assert job["apiVersion"] == "batch/v1"
    assert job["kind"] == "Job"
    assert job["metadata"]["name"] == job_name("run-1", "train", "step-run-1")
    assert job["metadata"]["namespace"] == "default"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] == 600
    assert "suspend" not in job["spec"]
    assert pod(job)["restartPolicy"] == "Never"
    assert pod(job)["automountServiceAccountToken"] is False
    assert container(job)["name"] == "step"
    assert container(job)["image"] == "python:3.11"
    assert container(job)["command"] == ["python", "-m", "step"]
    assert "resources" not in container(job)


def test_namespace_precedence() -> None:
    assert build(S(namespace="a"))["metadata"]["namespace"] == "a"
    assert build(S(namespace="a"), namespace="b")["metadata"]["namespace"] == "b"
    refused("settings.namespace", settings=dict(namespace="Not_Valid"))
    refused("namespace", namespace="x" * 64)


def test_metadata_labels_and_annotations() -> None:
    job = build(
        S(
            labels={"team": "ml"},
            annotations={"note": "any text ü"},
            pod_labels={"tier": "gpu"},
            pod_annotations={"sim.k8s-step-operator.io/exit-code": "3"},
        ),
        info={"run_id": "run 1/ü", "pipeline_step_name": "Train Model!"},
    )
    meta = job["metadata"]
    assert meta["labels"]["team"] == "ml"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "k8s-step-operator"
    assert meta["annotations"]["note"] == "any text ü"
    assert meta["annotations"]["k8s-step-operator.io/run-id"] == "run 1/ü"
    assert meta["annotations"]["k8s-step-operator.io/step-name"] == "Train Model!"
    assert meta["annotations"]["k8s-step-operator.io/step-run-id"] == "step-run-1"
    assert meta["annotations"]["k8s-step-operator.io/run-name"] == "nightly"
    assert meta["annotations"]["k8s-step-operator.io/pipeline-name"] == "pipe"
    assert meta["labels"]["k8s-step-operator.io/step-run-id"] == "step-run-1"
    template = job["spec"]["template"]["metadata"]
    assert template["labels"]["tier"] == "gpu"
    assert "team" not in template["labels"]
    assert template["annotations"]["sim.k8s-step-operator.io/exit-code"] == "3"
    assert "note" not in template["annotations"]
    for labels in (meta["labels"], template["labels"]):
        assert labels["k8s-step-operator.io/run-id"] != "run 1/ü"  # sanitized


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        (dict(labels={"bad key!": "x"}), "settings.labels['bad key!']"),
        (dict(labels={"ok": "bad value!"}), "settings.labels['ok']"),
        (dict(labels={"ok": "x" * 64}), "settings.labels['ok']"),
        (dict(pod_labels={"a/b/c": "x"}), "settings.pod_labels['a/b/c']"),
        (dict(annotations={"Bad_Prefix.com/x": "v"}), "settings.annotations['Bad_Prefix.com/x']"),
        (
            dict(labels={"app.kubernetes.io/managed-by": "me"}),
            "settings.labels['app.kubernetes.io/managed-by']",
        ),
        (
            dict(annotations={"k8s-step-operator.io/run-id": "x"}),
            "settings.annotations['k8s-step-operator.io/run-id']",
        ),
        (
            dict(labels={"kueue.x-k8s.io/queue-name": "q"}),
            "settings.labels['kueue.x-k8s.io/queue-name']",
        ),
        (
            dict(pod_labels={"batch.kubernetes.io/job-name": "x"}),
            "settings.pod_labels['batch.kubernetes.io/job-name']",
        ),
    ],
)
def test_bad_or_reserved_metadata_is_refused(settings: dict[str, Any], field: str) -> None:
    refused(field, settings=settings)


def test_huge_annotations_are_refused() -> None:
    refused("settings.annotations", settings=dict(annotations={"big": "x" * 300_000}))


# --- GPUs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vendor", "resource", "taint"),
    [
        ("nvidia", "nvidia.com/gpu", "nvidia.com/gpu"),
        ("amd", "amd.com/gpu", "amd.com/gpu"),
        ("intel", "gpu.intel.com/i915", "gpu.intel.com/i915"),
        ("example.com/fpga", "example.com/fpga", "example.com/fpga"),
    ],
)
def test_gpu_vendor_resource_and_toleration(vendor: str, resource: str, taint: str) -> None:
    job = build(S(gpu_vendor=vendor), ResourceSettings(gpu_count=2))
    res = container(job)["resources"]
    assert res["requests"][resource] == "2"
    assert res["limits"][resource] == "2"
    assert {"key": taint, "operator": "Exists", "effect": "NoSchedule"} in pod(job)["tolerations"]


def test_gpu_count_setting_overrides_resource_settings() -> None:
    job = build(S(gpu_count=4), ResourceSettings(gpu_count=1))
    assert container(job)["resources"]["limits"]["nvidia.com/gpu"] == "4"
    job = build(S(gpu_count=0), ResourceSettings(gpu_count=1))
    assert "resources" not in container(job)
    assert "tolerations" not in pod(job)


def test_no_gpu_no_toleration_and_toleration_can_be_disabled() -> None:
    assert "tolerations" not in pod(build())
    job = build(S(gpu_tolerations=False), ResourceSettings(gpu_count=1))
    assert "tolerations" not in pod(job)


def test_user_toleration_for_the_gpu_taint_is_not_duplicated() -> None:
    t = Toleration(key="nvidia.com/gpu", operator="Equal", value="present", effect="NoSchedule")
    job = build(S(tolerations=[t]), ResourceSettings(gpu_count=1))
    assert pod(job)["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    ]


@pytest.mark.parametrize(
    "vendor", ["foo", "NVIDIA", "kubernetes.io/gpu", "nvidia", "requests.example.com/x", "a/b"]
)
def test_unknown_vendor(vendor: str) -> None:
    if vendor == "nvidia":
        build(S(gpu_vendor=vendor))
        return
    refused("settings.gpu_vendor", settings=dict(gpu_vendor=vendor))


def test_mig_profile_maps_to_mig_resource() -> None:
    job = build(S(mig_profile="1g.5gb", gpu_count=2))
    res = container(job)["resources"]
    assert res["limits"] == {"nvidia.com/mig-1g.5gb": "2"}
    assert res["requests"] == {"nvidia.com/mig-1g.5gb": "2"}
    assert "nvidia.com/gpu" not in res["limits"]


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        (dict(mig_profile="1g.5gb", gpu_vendor="amd", gpu_count=1), "settings.mig_profile"),
        (
            dict(mig_profile="1g.5gb", gpu_vendor="example.com/fpga", gpu_count=1),
            "settings.mig_profile",
        ),
        (dict(mig_profile="huge", gpu_count=1), "settings.mig_profile"),
        (dict(mig_profile="1g.10gb+me", gpu_count=1), "settings.mig_profile"),
        (dict(mig_profile="1g.5gb", gpu_vendor="amd"), "settings.mig_profile"),
    ],
)
def test_bad_mig(settings: dict[str, Any], field: str) -> None:
    refused(field, settings=settings)


@pytest.mark.parametrize(
    "settings",
    [
        dict(gpu_type="NVIDIA-H100-80GB-HBM3"),
        dict(gpu_type="h100", gpu_label_scheme="karpenter", gpu_count=0),
        dict(gpu_type="x", gpu_vendor="intel"),
        dict(mig_profile="1g.5gb"),
    ],
)
def test_gpu_model_and_mig_are_ignored_by_a_step_without_gpus(settings: dict[str, Any]) -> None:
    # A component's settings name the model its GPU steps need; its CPU steps run anywhere.
    job = build(S(**settings))
    spec = pod(job)
    assert spec.get("nodeSelector", {}) == {}
    assert "affinity" not in spec
    assert not [t for t in spec.get("tolerations", []) if t.get("key") == "nvidia.com/gpu"]
    resources = container(job).get("resources", {})
    assert not [r for r in resources.get("requests", {}) if "nvidia.com" in r]


@pytest.mark.parametrize(
    ("scheme", "gpu_type", "key", "value"),
    [
        (
            "gpu-feature-discovery",
            "NVIDIA-H100-80GB-HBM3",
            "nvidia.com/gpu.product",
            "NVIDIA-H100-80GB-HBM3",
        ),
        ("gke", "nvidia-tesla-a100", "cloud.google.com/gke-accelerator", "nvidia-tesla-a100"),
        ("karpenter", "A100", "karpenter.k8s.aws/instance-gpu-name", "a100"),
    ],
)
def test_label_schemes(scheme: str, gpu_type: str, key: str, value: str) -> None:
    job = build(S(gpu_type=gpu_type, gpu_label_scheme=scheme, gpu_count=1))
    assert pod(job)["nodeSelector"] == {key: value}


@pytest.mark.parametrize(
    ("vendor", "gpu_type", "key"),
    [
        ("nvidia", "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.product"),
        ("amd", "AMD_Instinct_MI300X", "amd.com/gpu.product-name"),
    ],
)
def test_default_label_scheme_follows_the_vendor(vendor: str, gpu_type: str, key: str) -> None:
    job = build(S(gpu_vendor=vendor, gpu_type=gpu_type, gpu_count=1))
    assert pod(job)["nodeSelector"] == {key: gpu_type}


@pytest.mark.parametrize("vendor", ["intel", "example.com/fpga"])
def test_vendor_without_a_model_label_needs_a_scheme(vendor: str) -> None:
    refused(
        "settings.gpu_label_scheme", settings=dict(gpu_vendor=vendor, gpu_type="x", gpu_count=1)
    )
    job = build(S(gpu_vendor=vendor, gpu_type="x", gpu_count=1, gpu_label_key="example.com/m"))
    assert pod(job)["nodeSelector"] == {"example.com/m": "x"}


def test_custom_label_key_and_a_scheme_of_the_callers() -> None:
    job = build(S(gpu_type="h100", gpu_label_key="example.com/gpu-model", gpu_count=1))
    assert pod(job)["nodeSelector"] == {"example.com/gpu-model": "h100"}
    scheme = GPULabelScheme("test-upper", "example.org/accel", str.upper)
    schemes = {**GPU_LABEL_SCHEMES, scheme.name: scheme}
    settings = S(gpu_type="h100", gpu_label_scheme="test-upper", gpu_count=1)
    job = build(settings, gpu_label_schemes=schemes)
    assert pod(job)["nodeSelector"] == {"example.org/accel": "H100"}
    # The scheme went with that call only: the built-in table is what it was.
    assert "test-upper" not in GPU_LABEL_SCHEMES
    refused("settings.gpu_label_scheme", settings=settings)


def test_the_operator_builds_with_its_own_schemes() -> None:
    scheme = GPULabelScheme("test-upper", "example.org/accel", str.upper)
    config = KubernetesJobStepOperatorConfig(
        namespace="ml", gpu_type="h100", gpu_label_scheme="test-upper", gpu_count=1
    )
    operator = KubernetesJobStepOperator(config=config)
    with pytest.raises(ConfigurationError):
        operator.build_job(info(), ["python"], {})
    operator.gpu_label_schemes = {**GPU_LABEL_SCHEMES, scheme.name: scheme}
    assert pod(operator.build_job(info(), ["python"], {}))["nodeSelector"] == {
        "example.org/accel": "H100"
    }
    assert KubernetesJobStepOperator.gpu_label_schemes is GPU_LABEL_SCHEMES


def test_the_built_in_tables_cannot_be_changed() -> None:
    from k8s_step_operator._job.gpu import GPU_VENDORS

    with pytest.raises(TypeError):
        GPU_LABEL_SCHEMES["mine"] = GPULabelScheme("mine", "example.org/m")  # type: ignore[index]
    with pytest.raises(TypeError):
        GPU_VENDORS["mine"] = GPU_VENDORS["nvidia"]  # type: ignore[index]


def test_a_scheme_with_a_bad_label_key_cannot_be_made() -> None:
    with pytest.raises(ConfigurationError) as exc:
        GPULabelScheme("bad", "not a key")
    assert exc.value.field == "GPULabelScheme.label_key"


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        (dict(gpu_type="x", gpu_label_scheme="nope", gpu_count=1), "settings.gpu_label_scheme"),
        (dict(gpu_type="x", gpu_label_key="bad key", gpu_count=1), "settings.gpu_label_key"),
        (dict(gpu_type="A100 80GB", gpu_count=1), "settings.gpu_type"),
        (
            dict(gpu_type="a100", gpu_count=1, node_selector={"nvidia.com/gpu.product": "t4"}),
            "settings.node_selector",
        ),
    ],
)
def test_bad_gpu_selection(settings: dict[str, Any], field: str) -> None:
    refused(field, settings=settings)


def test_node_selector_merges_with_gpu_type() -> None:
    job = build(S(gpu_type="Tesla-T4", gpu_count=1, node_selector={"pool": "gpu"}))
    assert pod(job)["nodeSelector"] == {"pool": "gpu", "nvidia.com/gpu.product": "Tesla-T4"}


# --- CPU, memory, shm -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpu", "quantity"),
    [(1, "1"), (0.5, "500m"), (1.5, "1500m"), (0.0001, "1m"), (2.0005, "2001m")],
)
def test_cpu_request(cpu: float, quantity: str) -> None:
    res = container(build(resources=ResourceSettings(cpu_count=cpu)))["resources"]
    assert res == {"requests": {"cpu": quantity}}


def test_cpu_limit_opt_in() -> None:
    res = container(build(S(cpu_limit=True), ResourceSettings(cpu_count=2)))["resources"]
    assert res["limits"]["cpu"] == "2"
    refused("settings.cpu_limit", settings=dict(cpu_limit=True))


@pytest.mark.parametrize(
    ("memory", "quantity"), [("16GB", "16G"), ("512MiB", "512Mi"), ("1KB", "1k"), ("2PiB", "2Pi")]
)
def test_memory_request_equals_limit(memory: str, quantity: str) -> None:
    res = container(build(resources=ResourceSettings(memory=memory)))["resources"]
    assert res["requests"]["memory"] == quantity
    assert res["limits"]["memory"] == quantity


def test_zero_or_absurd_memory_refused() -> None:
    # Refused by our ResourceSettings at once; ZenML's accepts them, and the builder refuses.
    for memory in ("0GB", "9000000PiB"):
        with pytest.raises(ConfigurationError):
            ResourceSettings(memory=memory)
        zenmls = ResourceSettings.model_construct(memory=memory)
        refused("resource_settings.memory", resources=zenmls)
    refused("resource_settings.cpu_count", resources=ResourceSettings(cpu_count=1e12))


def test_shm_volume() -> None:
    job = build(S(shm_size="2Gi"))
    assert pod(job)["volumes"] == [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}
    ]
    assert container(job)["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert "volumes" not in pod(build())


@pytest.mark.parametrize("size", ["0", "0Gi", "1 Gi", "-1Gi", "1gb", "500m", "1e3", "99999Ei"])
def test_bad_shm(size: str) -> None:
    refused("settings.shm_size", settings=dict(shm_size=size))


# --- placement ---


def test_tolerations_affinity_priority_service_account() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                ]
            }
        }
    }
    job = build(
        S(
            tolerations=[
                Toleration(operator="Exists"),
                Toleration(
                    key="spot",
                    operator="Equal",
                    value="true",
                    effect="NoExecute",
                    toleration_seconds=30,
                ),
            ],
            affinity=affinity,
            priority_class_name="high",
            service_account_name="step-runner",
            image_pull_secrets=["regcred"],
            image_pull_policy="IfNotPresent",
        )
    )
    spec = pod(job)
    assert spec["tolerations"] == [
        {"operator": "Exists"},
        {
            "key": "spot",
            "operator": "Equal",
            "value": "true",
            "effect": "NoExecute",
            "tolerationSeconds": 30,
        },
    ]
    assert spec["affinity"] == affinity
    assert spec["affinity"] is not affinity
    assert spec["priorityClassName"] == "high"
    assert spec["serviceAccountName"] == "step-runner"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert container(job)["imagePullPolicy"] == "IfNotPresent"


@pytest.mark.parametrize(
    ("toleration", "field"),
    [
        (dict(operator="Equal", value="x"), "settings.tolerations[0].operator"),
        (dict(key="k", operator="Exists", value="x"), "settings.tolerations[0].value"),
        (dict(key="k", value="bad value"), "settings.tolerations[0].value"),
        (dict(key="bad key", operator="Exists"), "settings.tolerations[0].key"),
        (
            dict(key="k", operator="Exists", effect="NoSchedule", toleration_seconds=5),
            "settings.tolerations[0].toleration_seconds",
        ),
    ],
)
def test_bad_tolerations(toleration: dict[str, Any], field: str) -> None:
    refused(field, settings=dict(tolerations=[toleration]))


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        (dict(affinity={"nodeAffinityy": {}}), "settings.affinity['nodeAffinityy']"),
        (dict(priority_class_name="High"), "settings.priority_class_name"),
        (dict(service_account_name="a b"), "settings.service_account_name"),
        (dict(image_pull_secrets=["UPPER"]), "settings.image_pull_secrets[0]"),
        (dict(node_selector={"k": "v v"}), "settings.node_selector['k']"),
        (dict(image="has space:1"), "settings.image"),
        (dict(image=""), "settings.image"),
    ],
)
def test_bad_placement_and_names(settings: dict[str, Any], field: str) -> None:
    refused(field, settings=settings)


def test_image_comes_from_info_unless_set() -> None:
    assert container(build(S(image="mine:2")))["image"] == "mine:2"
    job = build(info={"images": {"kubernetes_job_step_operator": "built:1", "default": "d:1"}})
    assert container(job)["image"] == "built:1"
    refused("info.images['kubernetes_job_step_operator']", info={"images": {}})


# --- Kueue, failure policy, lifetime --------------------------------------------------------------


def test_kueue_queue_suspends_the_job() -> None:
    job = build(S(queue_name="team-a"))
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["suspend"] is True
    refused("settings.queue_name", settings=dict(queue_name="bad queue"))
    refused("settings.queue_name", settings=dict(queue_name=""))


def test_failure_policy() -> None:
    job = build(S(fail_on_exit_codes=[42, 3, 3]))
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert rules[1] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "step", "operator": "In", "values": [3, 42]},
    }
    assert build()["spec"]["podFailurePolicy"]["rules"] == [rules[0]]
    assert "podFailurePolicy" not in build(S(ignore_disruptions=False))["spec"]


@pytest.mark.parametrize("code", [0, 256, -1])
def test_bad_exit_codes(code: int) -> None:
    refused("settings.fail_on_exit_codes[0]", settings=dict(fail_on_exit_codes=[code]))


def test_deadlines_and_ttl() -> None:
    job = build(S(active_deadline_seconds=3600, ttl_seconds_after_finished=None, backoff_limit=2))
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    assert job["spec"]["backoffLimit"] == 2
    assert "ttlSecondsAfterFinished" not in job["spec"]


# --- environment and secrets ---


def test_env_and_secret_references() -> None:
    job = build(
        S(
            env={"MODE": "fast"},
            secret_env={"HF_TOKEN": SecretKeyRef(name="hf", key="token")},
            secret_env_from=["db-creds"],
        ),
        env={"ZENML_STEP": "x", "TOKENIZERS_PARALLELISM": "false"},
    )
    c = container(job)
    assert {"name": "ZENML_STEP", "value": "x"} in c["env"]
    assert {"name": "MODE", "value": "fast"} in c["env"]
    assert {"name": "TOKENIZERS_PARALLELISM", "value": "false"} in c["env"]
    assert {"name": "PYTHONUNBUFFERED", "value": "1"} in c["env"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}} in c[
        "env"
    ]
    assert c["envFrom"] == [{"secretRef": {"name": "db-creds"}}]
    assert "hf" not in json.dumps([e.get("value") for e in c["env"]])


@pytest.mark.parametrize(
    "name", ["NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES"]
)
def test_gpu_visibility_variables_refused(name: str) -> None:
    refused(f"environment[{name!r}]", env={name: "all"})
    refused(f"settings.env[{name!r}]", settings=dict(env={name: "all"}))
    refused(
        f"settings.secret_env[{name!r}]",
        settings=dict(secret_env={name: SecretKeyRef(name="s", key="k")}),
    )


@pytest.mark.parametrize(
    "name", ["HF_TOKEN", "DB_PASSWORD", "AWS_SECRET_ACCESS_KEY", "OPENAI_API_KEY", "my-secret"]
)
def test_secret_like_plain_env_refused_without_echoing(name: str) -> None:
    error = refused(f"environment[{name!r}]", env={name: "s3cr3t-value"})
    assert "s3cr3t-value" not in str(error)
    assert "secret_env" in error.accepted
    job = build(S(allow_secret_like_env=True), env={name: "v"})
    assert {"name": name, "value": "v"} in container(job)["env"]


@pytest.mark.parametrize(
    ("settings", "env", "field"),
    [
        (dict(), {"1BAD": "x"}, "environment['1BAD']"),
        (dict(), {"A=B": "x"}, "environment['A=B']"),
        (
            dict(secret_env={"A": dict(name="s", key="k")}),
            {"A": "x"},
            "settings.secret_env['A']",
        ),
        (
            dict(secret_env={"A": dict(name="Bad Name", key="k")}),
            {},
            "settings.secret_env['A'].name",
        ),
        (
            dict(secret_env={"A": dict(name="s", key="k/k")}),
            {},
            "settings.secret_env['A'].key",
        ),
        (dict(secret_env_from=["Bad"]), {}, "settings.secret_env_from[0]"),
    ],
)
def test_bad_env(settings: dict[str, Any], env: dict[str, str], field: str) -> None:
    refused(field, settings=settings, env=env)


def test_secret_values_are_refused_at_settings_construction() -> None:
    from k8s_step_operator._job.settings import parse_settings

    with pytest.raises(ConfigurationError) as exc:
        parse_settings({"secret_env": {"HF_TOKEN": "hf_abcdef"}})
    assert exc.value.field == "settings.secret_env"
    assert "reference" in exc.value.accepted
    assert "hf_abcdef" not in str(exc.value)


# --- security ---


def test_restricted_profile_by_default() -> None:
    job = build()
    assert pod(job)["securityContext"] == {
        "runAsUser": 1000,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    ctx = container(job)["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["runAsNonRoot"] is True
    assert "privileged" not in json.dumps(job)


def test_custom_ids_and_opt_out() -> None:
    job = build(S(run_as_user=2000, run_as_group=3000, fs_group=4000))
    assert pod(job)["securityContext"]["runAsUser"] == 2000
    assert pod(job)["securityContext"]["runAsGroup"] == 3000
    assert pod(job)["securityContext"]["fsGroup"] == 4000
    job = build(S(pod_security_profile="none"))
    assert "securityContext" not in pod(job)
    assert "securityContext" not in container(job)
    job = build(S(pod_security_profile="none", run_as_user=0))
    assert pod(job)["securityContext"] == {"runAsUser": 0}


def test_root_with_restricted_refused() -> None:
    refused("settings.run_as_user", settings=dict(run_as_user=0))
    refused("settings.run_as_user", settings=dict(run_as_user=2**31))


# --- escape hatch ---


def test_overrides_merge_last_and_append_lists() -> None:
    job = build(
        S(
            shm_size="1Gi",
            pod_spec_overrides={
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
                "initContainers": [{"name": "fetch", "image": "busybox:1", "command": ["true"]}],
                "terminationGracePeriodSeconds": 5,
            },
            container_overrides={
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "workingDir": "/work",
            },
        )
    )
    spec = pod(job)
    assert [v["name"] for v in spec["volumes"]] == ["dshm", "data"]
    assert spec["terminationGracePeriodSeconds"] == 5
    assert spec["initContainers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
    assert [m["mountPath"] for m in container(job)["volumeMounts"]] == ["/dev/shm", "/data"]
    assert container(job)["workingDir"] == "/work"


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        (dict(pod_spec_overrides={"containers": []}), "settings.pod_spec_overrides['containers']"),
        (
            dict(pod_spec_overrides={"securityContext": {}}),
            "settings.pod_spec_overrides['securityContext']",
        ),
        (
            dict(pod_spec_overrides={"volumes": {"name": "x"}}),
            "settings.pod_spec_overrides['volumes']",
        ),
        (
            dict(pod_spec_overrides={"hostNetwork": True}),
            "settings.pod_spec_overrides['hostNetwork']",
        ),
        (
            dict(container_overrides={"securityContext": {"privileged": True}}),
            "settings.container_overrides['securityContext']",
        ),
        (dict(container_overrides={"resources": {}}), "settings.container_overrides['resources']"),
        (
            dict(
                shm_size="1Gi", pod_spec_overrides={"volumes": [{"name": "dshm", "emptyDir": {}}]}
            ),
            "settings.pod_spec_overrides['volumes'][0].name",
        ),
        (
            dict(
                shm_size="1Gi",
                container_overrides={"volumeMounts": [{"name": "x", "mountPath": "/dev/shm"}]},
            ),
            "settings.container_overrides['volumeMounts']",
        ),
        (
            dict(pod_spec_overrides={"terminationGracePeriodSeconds": True}),
            "settings.pod_spec_overrides['terminationGracePeriodSeconds']",
        ),
        (
            dict(
                pod_spec_overrides={"volumes": [{"name": "x", "hostPath": {"path": float("nan")}}]}
            ),
            "settings.pod_spec_overrides['volumes']",
        ),
    ],
)
def test_overrides_refused(settings: dict[str, Any], field: str) -> None:
    refused(field, settings=settings)


def test_host_network_allowed_without_restricted_profile() -> None:
    job = build(S(pod_security_profile="none", pod_spec_overrides={"hostNetwork": True}))
    assert pod(job)["hostNetwork"] is True


# --- the command ---


@pytest.mark.parametrize("command", [[], "python -m x", [""], ["python", 3]])
def test_bad_command(command: Any) -> None:
    with pytest.raises(ConfigurationError) as exc:
        build(command=command)
    assert exc.value.field.startswith("entrypoint_command")


def test_builder_does_not_mutate_or_alias_settings() -> None:
    settings = S(pod_spec_overrides={"volumes": [{"name": "v", "emptyDir": {}}]})
    job = build(settings)
    pod(job)["volumes"][0]["name"] = "changed"
    assert settings.pod_spec_overrides["volumes"][0]["name"] == "v"
    assert build(settings) == build(settings)


def test_duck_typed_step_run_info_with_uuids() -> None:
    import uuid
    from types import SimpleNamespace

    run_id, step_run_id = uuid.uuid4(), uuid.uuid4()
    zenml_like = SimpleNamespace(
        run_id=run_id,
        step_run_id=step_run_id,
        run_name="r",
        pipeline_step_name="trainer",
        pipeline=SimpleNamespace(name="p"),
        config=SimpleNamespace(resource_settings=ResourceSettings(gpu_count=1)),
        get_image=lambda key: "img:1",
    )
    job = build_job(zenml_like, ["python"], {}, S())  # type: ignore[arg-type]
    annotations = job["metadata"]["annotations"]
    assert annotations["k8s-step-operator.io/run-id"] == str(run_id)
    assert annotations["k8s-step-operator.io/step-run-id"] == str(step_run_id)
    assert job["metadata"]["labels"]["k8s-step-operator.io/run-id"] == str(run_id)
    assert job["metadata"]["labels"]["k8s-step-operator.io/step-run-id"] == str(step_run_id)
    assert job["metadata"]["name"] == job_name(str(run_id), "trainer", str(step_run_id))


def test_node_selector_may_select_on_labels_others_set() -> None:
    selector = {
        "kubernetes.io/hostname": "gpu-h100-0",
        "k8s-step-operator.io/pool": "h100",
        "node.kubernetes.io/instance-type": "p5.48xlarge",
    }
    assert pod(build(S(node_selector=selector)))["nodeSelector"] == selector
    refused("settings.node_selector['bad key']", settings=dict(node_selector={"bad key": "x"}))


def test_each_attempt_of_a_step_gets_its_own_job() -> None:
    first = build(info={"step_run_id": "attempt-1"})
    again = build(info={"step_run_id": "attempt-1"})
    retry = build(info={"step_run_id": "attempt-2"})
    assert first["metadata"]["name"] == again["metadata"]["name"]
    assert first["metadata"]["name"] != retry["metadata"]["name"]
    assert first["metadata"]["name"] == job_name("run-1", "train", "attempt-1")
    for job, attempt in ((first, "attempt-1"), (retry, "attempt-2")):
        for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
            assert labels["k8s-step-operator.io/step-run-id"] == attempt
