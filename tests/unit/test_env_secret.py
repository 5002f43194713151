"""Secret environment values: in the Job's own Secret only, read by reference."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from k8s_step_operator import (
    ConfigurationError,
    KubernetesJobStepOperatorSettings,
    SecretKeyRef,
    StepRunInfo,
    build_job,
    job_name,
)
from k8s_step_operator._job.builder import build_env_secret

INFO = StepRunInfo(
    run_id="run-1", step_run_id="attempt-1", pipeline_step_name="train", images={"default": "i:1"}
)
TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.value"
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def build(
    secret_environment: dict[str, str],
    environment: dict[str, str] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    return build_job(
        INFO,
        ["python"],
        environment or {},
        KubernetesJobStepOperatorSettings(**settings),
        secret_environment=secret_environment,
    )


def env(job: dict[str, Any]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = job["spec"]["template"]["spec"]["containers"][0]["env"]
    return entries


def test_values_appear_only_as_references_to_the_jobs_secret() -> None:
    job = build({"ZENML_STORE_API_TOKEN": TOKEN, "HF_TOKEN": "hf_abc"})
    name = job_name("run-1", "train", "attempt-1") + "-env"
    assert {
        "name": "ZENML_STORE_API_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": name, "key": "ZENML_STORE_API_TOKEN"}},
    } in env(job)
    assert {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": name, "key": "HF_TOKEN"}},
    } in env(job)
    text = json.dumps(job)
    assert TOKEN not in text
    assert "hf_abc" not in text


def test_the_secret_name_is_derived_from_the_job_name() -> None:
    long_step = StepRunInfo(
        run_id="r", step_run_id="s", pipeline_step_name="x" * 300, images={"default": "i:1"}
    )
    job = build_job(
        long_step,
        ["python"],
        {},
        KubernetesJobStepOperatorSettings(),
        secret_environment={"A": "1"},
    )
    ref = env(job)[-1]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == job["metadata"]["name"] + "-env"
    assert len(ref["name"]) <= 253
    assert DNS_SUBDOMAIN.fullmatch(ref["name"])
    again = build_job(
        long_step,
        ["python"],
        {},
        KubernetesJobStepOperatorSettings(),
        secret_environment={"A": "2"},
    )
    assert env(again)[-1] == env(job)[-1]


def test_without_secret_environment_nothing_refers_to_a_job_secret() -> None:
    assert "-env" not in json.dumps(env(build({})))


@pytest.mark.parametrize(
    ("secret_environment", "environment", "settings", "field"),
    [
        ({"MODE": "x"}, {"MODE": "y"}, {}, "secret_environment['MODE']"),
        ({"MODE": "x"}, {}, {"env": {"MODE": "y"}}, "secret_environment['MODE']"),
        (
            {"HF_TOKEN": "x"},
            {},
            {"secret_env": {"HF_TOKEN": SecretKeyRef(name="hf", key="token")}},
            "secret_environment['HF_TOKEN']",
        ),
        ({"PYTHONUNBUFFERED": "0"}, {}, {}, "secret_environment['PYTHONUNBUFFERED']"),
        ({"1BAD": "x"}, {}, {}, "secret_environment['1BAD']"),
        ({"NVIDIA_VISIBLE_DEVICES": "all"}, {}, {}, "secret_environment['NVIDIA_VISIBLE_DEVICES']"),
        ({"..": "x"}, {}, {}, "secret_environment['..']"),
        ({"A": 3}, {}, {}, "secret_environment['A']"),
    ],
)
def test_conflicting_or_invalid_names_are_refused(
    secret_environment: dict[str, Any],
    environment: dict[str, str],
    settings: dict[str, Any],
    field: str,
) -> None:
    with pytest.raises(ConfigurationError) as exc:
        build(secret_environment, environment, **settings)
    assert exc.value.field == field
    assert exc.value.value != "x" or field.endswith("['MODE']")


# --- the Secret ----------------------------------------------------------------------------------


def test_build_env_secret() -> None:
    job = build({"ZENML_STORE_API_TOKEN": TOKEN, "EMPTY": ""})
    secret = build_env_secret(job, {"ZENML_STORE_API_TOKEN": TOKEN, "EMPTY": ""}, job_uid="uid-1")
    assert secret["apiVersion"] == "v1"
    assert secret["kind"] == "Secret"
    assert secret["type"] == "Opaque"
    meta = secret["metadata"]
    assert meta["name"] == job["metadata"]["name"] + "-env"
    assert meta["namespace"] == job["metadata"]["namespace"]
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "k8s-step-operator",
        "k8s-step-operator.io/run-id": "run-1",
        "k8s-step-operator.io/step-name": "train",
        "k8s-step-operator.io/step-run-id": "attempt-1",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": job["metadata"]["name"],
            "uid": "uid-1",
            "controller": False,
            "blockOwnerDeletion": False,
        }
    ]
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "ZENML_STORE_API_TOKEN": TOKEN,
        "EMPTY": "",
    }
    json.dumps(secret)


def test_every_key_the_job_reads_is_in_the_secret() -> None:
    job = build({"A": "1", "B": "2"})
    for values in ({"A": "1"}, {"A": "1", "B": "2", "C": "3"}, {}):
        with pytest.raises(ConfigurationError) as exc:
            build_env_secret(job, values, job_uid="uid")
        assert exc.value.field == "values"
    with pytest.raises(ConfigurationError) as exc:
        build_env_secret(job, {"A": "1", "B": 2}, job_uid="uid")  # type: ignore[dict-item]
    assert exc.value.field == "values['B']"
    with pytest.raises(ConfigurationError) as exc:
        build_env_secret(job, {"A": "1", "B": "2"}, job_uid="")
    assert exc.value.field == "job_uid"


def test_values_are_never_echoed_in_errors() -> None:
    job = build({"A": "1"})
    with pytest.raises(ConfigurationError) as exc:
        build_env_secret(job, {"A": TOKEN, "B": TOKEN}, job_uid="uid")
    assert TOKEN not in str(exc.value)
