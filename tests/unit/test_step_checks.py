"""Every bound lives in the settings model; one stage validates; the assembler only writes."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from k8s_step_operator import (
    ConfigurationError,
    KubernetesJobStepOperatorSettings,
    ResourceSettings,
    StepConfiguration,
    StepRunInfo,
    build_job,
)
from k8s_step_operator._job import assemble
from k8s_step_operator._job import settings as settings_module
from k8s_step_operator._job.assemble import assemble_job
from k8s_step_operator._job.spec import StepSpec
from k8s_step_operator._job.step_checks import validate_step

S = KubernetesJobStepOperatorSettings
INFO = StepRunInfo(
    run_id="r", step_run_id="a", pipeline_step_name="train", images={"default": "i:1"}
)


def refused_at_construction(field: str, **data: Any) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as exc:
        S(**data)
    assert exc.value.field == field, exc.value
    assert exc.value.accepted
    return exc.value


# --- every bound, at construction --------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "low", "high"),
    [
        ("gpu_count", 0, 1_000_000),
        ("backoff_limit", 0, 2**31 - 1),
        ("ttl_seconds_after_finished", 0, 2**31 - 1),
        ("active_deadline_seconds", 1, 2**63 - 1),
        ("run_as_user", 0, 2**31 - 1),
        ("run_as_group", 0, 2**31 - 1),
        ("fs_group", 0, 2**31 - 1),
    ],
)
def test_integer_bounds(field: str, low: int, high: int) -> None:
    assert getattr(S(**{field: low}), field) == low
    assert getattr(S(**{field: high}), field) == high
    for bad in (low - 1, high + 1, True, 1.5, "many"):
        error = refused_at_construction(f"settings.{field}", **{field: bad})
        assert f"from {low} to {high}" in error.accepted


def test_exit_codes_are_bounded_in_the_model() -> None:
    assert S(fail_on_exit_codes=[1, 255]).fail_on_exit_codes == [1, 255]
    for code in (0, 256, -1, True):
        error = refused_at_construction(
            "settings.fail_on_exit_codes[1]", fail_on_exit_codes=[3, code]
        )
        assert "1 to 255" in error.accepted


def test_gpu_count_message_says_what_is_accepted() -> None:
    error = refused_at_construction("settings.gpu_count", gpu_count="two")
    assert error.accepted.startswith("a whole number of GPUs")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"namespace": "Not_Valid"}, "settings.namespace"),
        ({"service_account_name": "a b"}, "settings.service_account_name"),
        ({"image_pull_secrets": ["ok", "UPPER"]}, "settings.image_pull_secrets[1]"),
        ({"secret_env_from": ["Bad"]}, "settings.secret_env_from[0]"),
        ({"priority_class_name": "High"}, "settings.priority_class_name"),
        ({"workload_priority_class": "High"}, "settings.workload_priority_class"),
        ({"workload_priority_class": "a" * 64}, "settings.workload_priority_class"),
        ({"queue_name": ""}, "settings.queue_name"),
        ({"labels": {"bad key!": "x"}}, "settings.labels['bad key!']"),
        ({"pod_labels": {"ok": "bad value!"}}, "settings.pod_labels['ok']"),
        ({"node_selector": {"k": "v v"}}, "settings.node_selector['k']"),
        ({"annotations": {"big": "x" * 300_000}}, "settings.annotations"),
        ({"shm_size": "500m"}, "settings.shm_size"),
        ({"shm_size": "0"}, "settings.shm_size"),
        ({"env": {"1BAD": "x"}}, "settings.env['1BAD']"),
        ({"env": {"CUDA_VISIBLE_DEVICES": "0"}}, "settings.env['CUDA_VISIBLE_DEVICES']"),
        ({"secret_env": {"A": {"name": "s", "key": ".."}}}, "settings.secret_env['A'].key"),
        ({"gpu_vendor": "NVIDIA"}, "settings.gpu_vendor"),
        ({"gpu_label_key": "bad key"}, "settings.gpu_label_key"),
        ({"mig_profile": "huge"}, "settings.mig_profile"),
        ({"image": "has space"}, "settings.image"),
        ({"affinity": {"nodeAffinityy": {}}}, "settings.affinity['nodeAffinityy']"),
        ({"tolerations": [{"key": "k", "value": "bad value"}]}, "settings.tolerations[0].value"),
        ({"tolerations": [{"operator": "Equal"}]}, "settings.tolerations[0].operator"),
        ({"on_sigterm": "ignore"}, "settings.on_sigterm"),
        ({"scale_up_timeout": 0}, "settings.scale_up_timeout"),
        ({"pod_spec_overrides": {"hostPID": True}}, "settings.pod_spec_overrides['hostPID']"),
    ],
)
def test_syntax_is_checked_at_construction(data: dict[str, Any], field: str) -> None:
    refused_at_construction(field, **data)


def test_trailing_newlines_are_not_names() -> None:
    refused_at_construction("settings.namespace", namespace="ml\n")
    refused_at_construction("settings.labels['team']", labels={"team": "ml\n"})


def test_new_fields_and_their_defaults() -> None:
    s = S()
    assert s.scale_up_timeout == 900
    assert s.on_sigterm == "delete"
    assert s.workload_priority_class is None
    assert S(scale_up_timeout=None).scale_up_timeout is None
    assert S(on_sigterm="detach").on_sigterm == "detach"


def test_the_runner_reads_its_fields_from_the_settings() -> None:
    for name in (
        "pending_timeout",
        "image_pull_backoff_timeout",
        "missing_config_grace",
        "queue_timeout",
        "safety_poll_interval",
        "stream_logs",
        "preflight_fit_check",
        "delete_on_cancel",
        "scale_up_timeout",
        "on_sigterm",
    ):
        assert name in S.model_fields, name
        assert S.model_fields[name].description


def test_workload_priority_class_labels_the_job() -> None:
    job = build_job(INFO, ["x"], {}, S(workload_priority_class="high", queue_name="team"))
    labels = job["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/priority-class"] == "high"
    assert labels["kueue.x-k8s.io/queue-name"] == "team"
    assert "kueue.x-k8s.io/priority-class" not in job["spec"]["template"]["metadata"]["labels"]
    refused_at_construction(
        "settings.labels['kueue.x-k8s.io/priority-class']",
        labels={"kueue.x-k8s.io/priority-class": "high"},
    )


# --- one validation stage, then assembly -------------------------------------------------------


def test_build_job_is_validate_then_assemble() -> None:
    settings = S(gpu_count=1, shm_size="1Gi", labels={"team": "ml"})
    spec = validate_step(INFO, ["python"], {"A": "1"}, settings, namespace="ml")
    assert isinstance(spec, StepSpec)
    assert assemble_job(spec) == build_job(INFO, ["python"], {"A": "1"}, settings, namespace="ml")


def test_the_spec_is_frozen_and_normalized() -> None:
    spec = validate_step(INFO, ["python"], {}, S(fail_on_exit_codes=[42, 3, 3]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.job_labels["x"] = "y"  # type: ignore[index]
    assert spec.fail_on_exit_codes == (3, 42)
    assert spec.namespace == "default"
    assert spec.run_as_user == 1000
    assert ("PYTHONUNBUFFERED", "1") in spec.plain_env


def test_the_assembler_never_refuses() -> None:
    source = Path(inspect.getfile(assemble)).read_text()
    assert "ConfigurationError" not in source
    assert "raise " not in source


def test_every_bound_is_defined_in_the_settings_module() -> None:
    names = ("MAX_INT32", "MAX_INT64", "MAX_GPUS", "MAX_CPU_CORES", "MAX_ANNOTATION_BYTES")
    for name in names:
        assert isinstance(getattr(settings_module, name), int)
    assert settings_module.EXIT_CODE_RANGE == (1, 255)


def test_zenml_resource_settings_are_checked_against_the_cluster_bounds() -> None:
    # ZenML's own ResourceSettings knows no Kubernetes bounds: the validation stage checks them.
    def zenml_info(**resources: Any) -> Any:
        return SimpleNamespace(
            run_id="r",
            step_run_id="a",
            pipeline_step_name="t",
            run_name="",
            pipeline=SimpleNamespace(name="p"),
            config=SimpleNamespace(
                resource_settings=SimpleNamespace(
                    **{"cpu_count": None, "gpu_count": None, "memory": None, **resources}
                )
            ),
            get_image=lambda key: "img:1",
        )

    for resources, field in (
        ({"gpu_count": 2_000_000}, "resource_settings.gpu_count"),
        ({"gpu_count": True}, "resource_settings.gpu_count"),
        ({"cpu_count": 1e12}, "resource_settings.cpu_count"),
        ({"memory": "9000000PiB"}, "resource_settings.memory"),
        ({"memory": "16 GB"}, "resource_settings.memory"),
    ):
        with pytest.raises(ConfigurationError) as exc:
            build_job(zenml_info(**resources), ["x"], {}, S())
        assert exc.value.field == field
    job = build_job(zenml_info(memory="100B", gpu_count=1), ["x"], {}, S())
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {
        "memory": "100",
        "nvidia.com/gpu": "1",
    }


def test_memory_in_bytes_becomes_a_plain_quantity() -> None:
    info = StepRunInfo(
        run_id="r",
        step_run_id="a",
        pipeline_step_name="t",
        images={"default": "i:1"},
        config=StepConfiguration(resource_settings=ResourceSettings(memory="1048576B")),
    )
    limits = build_job(info, ["x"], {}, S())["spec"]["template"]["spec"]["containers"][0][
        "resources"
    ]
    assert limits["limits"]["memory"] == "1048576"
