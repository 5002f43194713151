"""Steps of several ranks: the Indexed Job, each rank's environment, the headless Service, and
every refusal before anything is sent. A step of one rank stays exactly the Job it was."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from k8s_step_operator import (
    ConfigurationError,
    KubernetesJobStepOperatorSettings,
    PipelineConfiguration,
    ResourceSettings,
    StepConfiguration,
    StepRunInfo,
    build_job,
    job_name,
)
from k8s_step_operator._job.kube_syntax import is_dns_label
from k8s_step_operator._job.ranks import (
    DISTRIBUTED_ENV,
    build_rank_service,
    master_address,
    ranks_of,
)
from k8s_step_operator._job.settings import MAX_NODES

S = KubernetesJobStepOperatorSettings
GOLDEN = Path(__file__).with_name("data") / "job_one_rank.json"
BLOCK = "k8s-step-operator.io/topology-block"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
INDEX_PATH = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def info(gpus: int = 0, cpu: float | None = None, memory: str | None = None, **kw: Any) -> Any:
    fields: dict[str, Any] = {
        "step_run_id": "step-run-1",
        "run_id": "run-1",
        "run_name": "nightly",
        "pipeline_step_name": "train",
        "pipeline": PipelineConfiguration(name="pipe"),
        "config": StepConfiguration(
            resource_settings=ResourceSettings(gpu_count=gpus, cpu_count=cpu, memory=memory)
        ),
        "images": {"default": "python:3.11"},
    }
    fields.update(kw)
    return StepRunInfo(**fields)


def build(gpus: int = 0, env: dict[str, str] | None = None, **settings: Any) -> dict[str, Any]:
    job = build_job(info(gpus), ["torchrun", "train.py"], env or {}, S(image="img:1", **settings))
    json.dumps(job)
    return job


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    entries = job["spec"]["template"]["spec"]["containers"][0]["env"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in entries}


def refused(
    field: str, *, gpus: int = 0, env: dict[str, str] | None = None, **settings: Any
) -> str:
    with pytest.raises(ConfigurationError) as exc:
        build(gpus, env, **settings)
    assert exc.value.field == field, exc.value
    assert exc.value.accepted
    return str(exc.value)


# --- one rank: today's Job, byte for byte ------------------------------------------------------


def test_one_rank_is_the_job_of_before_byte_for_byte() -> None:
    """The Jobs in data/job_one_rank.json were written by the builder before ranks existed."""
    golden = json.loads(GOLDEN.read_text())
    # The settings of several ranks are ignored with one.
    gang_only = {"rendezvous_port": 1234, "topology": BLOCK, "log_ranks": "first"}
    plain = build_job(info(0), ["python", "-m", "step"], {}, S(num_nodes=1, **gang_only))
    assert json.dumps(plain) == json.dumps(golden["plain"])
    gpu = build_job(
        info(8, 16, "64GiB"),
        ["torchrun", "train.py"],
        {"EPOCHS": "3", "WORLD_SIZE": "1"},
        S(
            namespace="ml",
            gpu_type="NVIDIA-H100-80GB-HBM3",
            shm_size="16Gi",
            queue_name="gpu",
            fail_on_exit_codes=[3, 2],
            labels={"team": "ml"},
            pod_annotations={"note": "x"},
            affinity={"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
            tolerations=[
                {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
            ],
            pod_spec_overrides={"hostname": "h", "subdomain": "s"},
            secret_env={"HF_TOKEN": {"name": "hf", "key": "token"}},
            **gang_only,
        ),
        secret_environment={"ZENML_STORE_API_TOKEN": "t"},
    )
    assert json.dumps(gpu) == json.dumps(golden["gpu"])
    assert ranks_of(gpu) == 1


# --- several ranks: the Indexed Job ------------------------------------------------------------


def test_several_ranks_are_one_indexed_job_all_or_nothing() -> None:
    job = build(8, num_nodes=4, gpu_type="NVIDIA-H100-80GB-HBM3")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 4
    assert ranks_of(job) == 4
    # The first failed rank fails the Job (the controller stops the others); the Job succeeds
    # when every rank has.
    assert spec["backoffLimit"] == 0
    assert "successPolicy" not in spec
    # Disruptions follow the one-pod rule: not counted as failures.
    assert spec["podFailurePolicy"]["rules"][0]["action"] == "Ignore"
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == job["metadata"]["name"]
    # Every rank asks for the step's GPUs: N x gpu_count in all.
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "8"
    assert pod["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"


def test_each_rank_gets_the_launchers_environment() -> None:
    job = build(8, env={"EPOCHS": "3"}, num_nodes=4, rendezvous_port=23456)
    name = job["metadata"]["name"]
    env = env_of(job)
    index = {"fieldRef": {"fieldPath": INDEX_PATH}}
    assert (
        env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == f"{name}-0.{name}" == master_address(name)
    )
    assert env["MASTER_PORT"] == env["PET_MASTER_PORT"] == "23456"
    assert env["NNODES"] == env["PET_NNODES"] == "4"
    assert env["NPROC_PER_NODE"] == env["PET_NPROC_PER_NODE"] == "8"
    assert env["WORLD_SIZE"] == "32"
    assert env["NODE_RANK"] == env["PET_NODE_RANK"] == index
    # Eight processes per rank: torchrun numbers them, not the operator.
    assert "RANK" not in env
    assert "LOCAL_RANK" not in env
    assert env["EPOCHS"] == "3"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert set(DISTRIBUTED_ENV) - {"RANK", "LOCAL_RANK"} <= set(env)
    # No two entries share a dict (the Job aliases nothing).
    entries = job["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = [id(e["valueFrom"]) for e in entries if "valueFrom" in e]
    assert len(refs) == len(set(refs))


def test_one_process_per_rank_is_its_rank_for_env_init() -> None:
    env = env_of(build(0, num_nodes=2))
    index = {"fieldRef": {"fieldPath": INDEX_PATH}}
    assert env["NPROC_PER_NODE"] == "1"
    assert env["WORLD_SIZE"] == "2"
    assert env["RANK"] == index
    assert env["LOCAL_RANK"] == "0"
    assert env["MASTER_PORT"] == "29500"
    # One GPU per rank: still one process.
    assert env_of(build(1, num_nodes=3))["WORLD_SIZE"] == "3"


def test_secret_values_still_come_from_the_jobs_secret() -> None:
    job = build_job(
        info(0),
        ["python"],
        {},
        S(image="img:1", num_nodes=2),
        secret_environment={"ZENML_STORE_API_TOKEN": "s3cr3t-v4lue"},
    )
    entries = job["spec"]["template"]["spec"]["containers"][0]["env"]
    token = next(e for e in entries if e["name"] == "ZENML_STORE_API_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["name"] == job["metadata"]["name"] + "-env"
    assert "s3cr3t-v4lue" not in json.dumps(job)


@pytest.mark.parametrize(
    "step",
    ["train", "1st step", "x" * 80, "", "---", "Étape d'entraînement", "9" * 63],
)
def test_names_leave_room_for_every_ranks_hostname(step: str) -> None:
    name = job_name("run-1", step, "sr", ranks=MAX_NODES)
    assert DNS_1035.match(name), name  # the headless Service's name
    assert is_dns_label(f"{name}-{MAX_NODES - 1}")  # the last rank's hostname
    assert len(f"{name}-{MAX_NODES - 1}") <= 63
    # Same step run, same hash: only the slug may differ from the one-pod name.
    assert name.rsplit("-", 1)[1] == job_name("run-1", step, "sr").rsplit("-", 1)[1]
    assert job_name("run-1", step, "sr", ranks=2) == name


def test_short_names_are_the_same_for_one_rank_or_several() -> None:
    assert job_name("r", "train", "sr", ranks=8) == job_name("r", "train", "sr")
    job = build(0, num_nodes=3)
    assert job["metadata"]["name"] == job_name("run-1", "train", "step-run-1", ranks=3)


# --- topology ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "annotation"),
    [
        ("required", "kueue.x-k8s.io/podset-required-topology"),
        ("preferred", "kueue.x-k8s.io/podset-preferred-topology"),
    ],
)
def test_topology_with_kueue_is_a_podset_annotation(mode: str, annotation: str) -> None:
    job = build(8, num_nodes=2, queue_name="gpu", topology=BLOCK, topology_mode=mode)
    template = job["spec"]["template"]
    assert template["metadata"]["annotations"][annotation] == BLOCK
    assert "affinity" not in template["spec"]
    assert job["spec"]["suspend"] is True


def test_topology_without_kueue_is_pod_affinity_among_the_ranks() -> None:
    job = build(8, num_nodes=2, topology=BLOCK)
    name = job["metadata"]["name"]
    term = {
        "labelSelector": {"matchLabels": {"batch.kubernetes.io/job-name": name}},
        "topologyKey": BLOCK,
    }
    affinity = job["spec"]["template"]["spec"]["affinity"]
    assert affinity["podAffinity"] == {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
    annotations = job["spec"]["template"]["metadata"]["annotations"]
    assert not any(k.startswith("kueue.x-k8s.io/") for k in annotations)

    preferred = build(8, num_nodes=2, topology=BLOCK, topology_mode="preferred")
    affinity = preferred["spec"]["template"]["spec"]["affinity"]
    assert affinity["podAffinity"] == {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": term}
        ]
    }


def test_topology_affinity_joins_the_users_affinity_and_the_gpu_alias() -> None:
    user = {
        "podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"data": "near"}}, "topologyKey": "zone"}
            ]
        }
    }
    job = build(8, num_nodes=2, topology=BLOCK, affinity=user, gpu_type="H100")
    affinity = job["spec"]["template"]["spec"]["affinity"]
    terms = affinity["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert [t["topologyKey"] for t in terms] == ["zone", BLOCK]
    assert "nodeAffinity" in affinity  # the model alias H100 is a node affinity expression
    # The settings' own value is untouched.
    assert len(user["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]) == 1


# --- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, MAX_NODES + 1, 2.5, True, "many"])
def test_num_nodes_out_of_range(value: Any) -> None:
    with pytest.raises(ConfigurationError) as exc:
        S(num_nodes=value)
    assert exc.value.field == "settings.num_nodes"
    assert f"from 1 to {MAX_NODES}" in exc.value.accepted


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"rendezvous_port": 0}, "settings.rendezvous_port"),
        ({"rendezvous_port": 65536}, "settings.rendezvous_port"),
        ({"topology": "bad key!"}, "settings.topology"),
        ({"topology_mode": "sometimes"}, "settings.topology_mode"),
        ({"log_ranks": "some"}, "settings.log_ranks"),
    ],
)
def test_bad_rank_settings(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as exc:
        S(**settings)
    assert exc.value.field == field


@pytest.mark.parametrize("key", ["parallelism", "completions", "pod_count", "replicas", "nnodes"])
def test_other_tools_words_for_the_ranks_point_to_num_nodes(key: str) -> None:
    with pytest.raises(ConfigurationError) as exc:
        S(**{key: 4, "num_nodes": 2})
    assert exc.value.field == f"settings.{key}"
    assert exc.value.accepted.startswith("num_nodes for the number of nodes")


def test_retries_contradict_all_or_nothing() -> None:
    text = refused("settings.backoff_limit", num_nodes=2, backoff_limit=3)
    assert "0 with num_nodes 2" in text
    build(0, num_nodes=1, backoff_limit=3)  # one rank: retries as before


@pytest.mark.parametrize("key", ["hostname", "subdomain"])
def test_rank_names_cannot_be_overridden(key: str) -> None:
    text = refused(
        f"settings.pod_spec_overrides[{key!r}]", num_nodes=2, pod_spec_overrides={key: "x"}
    )
    assert "<job>-<rank>" in text


@pytest.mark.parametrize(
    ("where", "field"),
    [
        ("environment", "environment['WORLD_SIZE']"),
        ("env", "settings.env['WORLD_SIZE']"),
        ("secret_env", "settings.secret_env['WORLD_SIZE']"),
        ("secret_environment", "secret_environment['WORLD_SIZE']"),
    ],
)
def test_the_ranks_variables_cannot_be_set_by_the_user(where: str, field: str) -> None:
    settings: dict[str, Any] = {"image": "img:1", "num_nodes": 4}
    environment: dict[str, str] = {}
    secret: dict[str, str] = {}
    if where == "environment":
        environment["WORLD_SIZE"] = "8"
    elif where == "env":
        settings["env"] = {"WORLD_SIZE": "8"}
    elif where == "secret_env":
        settings["secret_env"] = {"WORLD_SIZE": {"name": "s", "key": "k"}}
    else:
        secret["WORLD_SIZE"] = "8"
    with pytest.raises(ConfigurationError) as exc:
        build_job(info(), ["python"], environment, S(**settings), secret_environment=secret)
    assert exc.value.field == field
    assert "num_nodes 4" in exc.value.accepted
    assert "MASTER_ADDR" in exc.value.accepted


@pytest.mark.parametrize("name", DISTRIBUTED_ENV)
def test_every_ranks_variable_is_refused(name: str) -> None:
    refused(f"environment[{name!r}]", env={name: "1"}, num_nodes=2)


def test_a_kueue_topology_annotation_next_to_the_setting_is_refused() -> None:
    refused(
        "settings.pod_annotations['kueue.x-k8s.io/podset-required-topology']",
        num_nodes=2,
        queue_name="gpu",
        topology=BLOCK,
        pod_annotations={"kueue.x-k8s.io/podset-required-topology": "rack"},
    )


# --- the headless Service -----------------------------------------------------------------------


def test_the_rank_service_is_headless_owned_and_selects_the_jobs_pods() -> None:
    job = build(0, num_nodes=3, rendezvous_port=12345, labels={"team": "ml"})
    service = build_rank_service(job, job_uid="uid-1")
    name = job["metadata"]["name"]
    assert service["apiVersion"] == "v1"
    assert service["kind"] == "Service"
    assert service["metadata"]["name"] == name
    assert service["metadata"]["namespace"] == "default"
    assert "team" not in service["metadata"]["labels"]
    assert service["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "k8s-step-operator"
    assert service["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": name,
            "uid": "uid-1",
            "controller": False,
            "blockOwnerDeletion": False,
        }
    ]
    spec = service["spec"]
    assert spec["clusterIP"] == "None"
    assert spec["publishNotReadyAddresses"] is True
    assert spec["selector"] == {"batch.kubernetes.io/controller-uid": "uid-1"}
    assert spec["ports"] == [
        {"name": "rendezvous", "port": 12345, "targetPort": 12345, "protocol": "TCP"}
    ]
    json.dumps(service)


def test_no_rank_service_for_one_pod_or_without_a_uid() -> None:
    with pytest.raises(ConfigurationError):
        build_rank_service(build(0), job_uid="uid-1")
    with pytest.raises(ConfigurationError):
        build_rank_service(build(0, num_nodes=2), job_uid="")
