"""The ZenML flavor without a cluster: classes, settings, conversions, the stack check, the calls.

ZenML's own objects are used where they are cheap to make (settings, resources, enums, Docker
settings); the step run objects ZenML builds from its store are stood in for by plain objects
carrying the attributes ZenML's have. The core operator is replaced by a recorder where a test
is about what the integration asks of it; where a test is about the Job, the real core renders
it with a kubeconfig that points nowhere (nothing is sent).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import uuid
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

zenml = pytest.importorskip("zenml")

from zenml.config import DockerSettings  # noqa: E402
from zenml.config import ResourceSettings as ZenMLResources  # noqa: E402
from zenml.enums import ExecutionStatus as ZenMLStatus  # noqa: E402
from zenml.enums import StackComponentType  # noqa: E402
from zenml.exceptions import RunInterruptedException, RunStoppedException  # noqa: E402
from zenml.stack import Flavor, StackComponent, StackComponentConfig  # noqa: E402
from zenml.step_operators import (  # noqa: E402
    BaseStepOperator,
    BaseStepOperatorConfig,
    BaseStepOperatorFlavor,
)

from k8s_step_operator import ConfigurationError, ExecutionStatus, StepFailedError  # noqa: E402
from k8s_step_operator import KubernetesJobStepOperatorSettings as CoreSettings  # noqa: E402
from k8s_step_operator.integrations import zenml as integration  # noqa: E402
from k8s_step_operator.integrations.zenml import (  # noqa: E402
    KubernetesJobStepOperator,
    KubernetesJobStepOperatorConfig,
    KubernetesJobStepOperatorFlavor,
    KubernetesJobStepOperatorSettings,
    _convert,
)
from k8s_step_operator.integrations.zenml.validation import (  # noqa: E402
    ClusterService,
    StackFacts,
    check_stack,
    cluster_service,
    is_loopback,
)

SOURCE = "k8s_step_operator.integrations.zenml.flavor.KubernetesJobStepOperatorFlavor"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.a-workload-token-scoped-to-the-run"


# -- the classes ZenML checks ----------------------------------------------------------------


def test_the_flavor_subclasses_zenmls_own_classes() -> None:
    flavor = KubernetesJobStepOperatorFlavor()
    assert isinstance(flavor, BaseStepOperatorFlavor) and isinstance(flavor, Flavor)
    assert flavor.name == "kubernetes_job"
    assert flavor.type is StackComponentType.STEP_OPERATOR
    assert flavor.config_class is KubernetesJobStepOperatorConfig
    assert flavor.implementation_class is KubernetesJobStepOperator
    assert issubclass(KubernetesJobStepOperator, BaseStepOperator)
    assert issubclass(KubernetesJobStepOperator, StackComponent)
    assert issubclass(KubernetesJobStepOperatorConfig, BaseStepOperatorConfig)
    assert issubclass(KubernetesJobStepOperatorConfig, StackComponentConfig)
    assert issubclass(KubernetesJobStepOperatorSettings, CoreSettings)
    assert flavor.docs_url is None and flavor.sdk_docs_url is None
    # What the dashboard and `zenml flavor describe` read.
    schema = flavor.config_schema
    assert {"gpu_type", "kubeconfig_path", "local", "local_stores_claim"} <= set(
        schema["properties"]
    )
    assert integration.__all__ == [
        "FLAVOR_NAME",
        "KubernetesJobStepOperator",
        "KubernetesJobStepOperatorConfig",
        "KubernetesJobStepOperatorFlavor",
        "KubernetesJobStepOperatorSettings",
    ]


def test_zenml_accepts_the_flavor_source() -> None:
    from zenml.stack.flavor import validate_flavor_source

    flavor_class, flavor = validate_flavor_source(SOURCE, StackComponentType.STEP_OPERATOR)
    assert flavor_class is KubernetesJobStepOperatorFlavor
    assert flavor.name == "kubernetes_job"


def test_the_cluster_access_fields_are_the_cores() -> None:
    from k8s_step_operator import KubernetesJobStepOperatorConfig as CoreConfig
    from k8s_step_operator.integrations.zenml.config import CLUSTER_ACCESS_FIELDS

    assert set(CLUSTER_ACCESS_FIELDS) == set(CoreConfig.model_fields) - set(
        CoreSettings.model_fields
    )
    for name in CLUSTER_ACCESS_FIELDS:
        ours = KubernetesJobStepOperatorConfig.model_fields[name]
        core = CoreConfig.model_fields[name]
        assert (ours.annotation, ours.default, ours.description) == (
            core.annotation,
            core.default,
            core.description,
        ), name


def test_config_takes_the_command_lines_strings() -> None:
    # `zenml step-operator register ... --node_selector='{"pool": "gpu"}' --local=true`
    config = KubernetesJobStepOperatorConfig(
        namespace="ml",
        gpu_type="H100",
        node_selector='{"pool": "gpu"}',
        tolerations='[{"key": "dedicated", "operator": "Equal", "value": "ml", '
        '"effect": "NoSchedule"}]',
        secret_env='{"HF_TOKEN": {"name": "hf", "key": "token"}}',
        pending_timeout="30",
        local="true",
        local_stores_claim="zenml-stores",
    )
    assert config.node_selector == {"pool": "gpu"}
    assert config.tolerations[0].value == "ml"
    assert config.secret_env["HF_TOKEN"].name == "hf"
    assert config.pending_timeout == 30
    assert config.local and config.is_local and not config.is_remote
    assert not KubernetesJobStepOperatorConfig().is_local
    assert KubernetesJobStepOperatorConfig().is_remote


def test_config_refuses_bad_values_naming_the_field() -> None:
    with pytest.raises(ConfigurationError) as raised:
        KubernetesJobStepOperatorConfig(gpu_count=-1)
    assert raised.value.field == "config.gpu_count"
    with pytest.raises(ConfigurationError):
        KubernetesJobStepOperatorConfig(local_stores_claim="Not A Claim")
    with pytest.raises(ConfigurationError) as raised:
        KubernetesJobStepOperatorConfig(secret_env='{"HF_TOKEN": "hf_the-token-itself"}')
    assert "hf_the-token-itself" not in str(raised.value)
    # A key a later version dropped still loads (ZenML itself refuses unknown keys at
    # registration).
    assert KubernetesJobStepOperatorConfig(retired_field=1).namespace is None


def test_step_settings_refuse_a_typo() -> None:
    with pytest.raises(ConfigurationError) as raised:
        KubernetesJobStepOperatorSettings(gpu_typo="H100")
    assert "gpu_typo" in str(raised.value)


# -- the operator as ZenML builds it ------------------------------------------------------------


def make_operator(name: str = "k8s", **config: Any) -> KubernetesJobStepOperator:
    now = datetime.now()
    return KubernetesJobStepOperator(
        name=name,
        id=uuid.uuid4(),
        config=KubernetesJobStepOperatorConfig(**config),
        flavor="kubernetes_job",
        type=StackComponentType.STEP_OPERATOR,
        user=None,
        created=now,
        updated=now,
    )


def container(settings: dict[str, Any]) -> Any:
    return SimpleNamespace(config=SimpleNamespace(settings=settings))


def test_settings_merge_the_component_and_the_step_canonical_key_first() -> None:
    operator = make_operator(
        namespace="ml", gpu_type="H100", shm_size="1Gi", kubeconfig_path="/k", local=False
    )
    merged = operator.get_settings(
        container(
            {
                "step_operator:k8s": {"shm_size": "8Gi", "pending_timeout": 60},
                "step_operator.kubernetes_job": {"shm_size": "2Gi"},
            }
        )
    )
    assert isinstance(merged, KubernetesJobStepOperatorSettings)
    assert (merged.namespace, merged.gpu_type, merged.shm_size) == ("ml", "H100", "8Gi")
    assert merged.pending_timeout == 60
    legacy = operator.get_settings(container({"step_operator.kubernetes_job": {"shm_size": "2Gi"}}))
    assert legacy.shm_size == "2Gi"
    # Another component's settings are not ours.
    other = operator.get_settings(container({"step_operator:other": {"shm_size": "9Gi"}}))
    assert other.shm_size == "1Gi"
    # ZenML's settings objects (extra keys as attributes) work like mappings.
    from zenml.config.base_settings import BaseSettings

    zenml_settings = BaseSettings(shm_size="4Gi")
    assert operator.get_settings(container({"step_operator:k8s": zenml_settings})).shm_size == (
        "4Gi"
    )


def test_local_mode_mounts_the_local_stores_and_runs_as_this_user(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ZENML_LOCAL_STORES_PATH", str(tmp_path / "stores"))
    operator = make_operator(
        namespace="ml",
        local=True,
        local_stores_claim="zenml-stores",
        pod_spec_overrides={"volumes": [{"name": "data", "emptyDir": {}}]},
    )
    s = operator.get_settings(container({}))
    assert s.pod_spec_overrides["volumes"] == [
        {"name": "data", "emptyDir": {}},
        {"name": "zenml-local-stores", "persistentVolumeClaim": {"claimName": "zenml-stores"}},
    ]
    assert s.container_overrides["volumeMounts"] == [
        {"name": "zenml-local-stores", "mountPath": str(tmp_path / "stores")}
    ]
    assert s.env["ZENML_LOCAL_STORES_PATH"] == str(tmp_path / "stores")
    assert (s.run_as_user, s.run_as_group) == (os.getuid(), os.getgid())
    chosen = make_operator(local=True, local_stores_claim="c", run_as_user=2000).get_settings(
        container({})
    )
    assert chosen.run_as_user == 2000


def test_environment_reaches_the_step_unchanged_but_the_token_is_secret() -> None:
    plain, secret = _convert.split_environment(
        {
            "ZENML_STORE_URL": "https://zenml.example.com",
            "ZENML_STORE_API_TOKEN": TOKEN,
            "ZENML_STORE_PASSWORD": "hunter2-is-long-enough",
            "DISABLE_CREDENTIALS_DISK_CACHING": "true",
            "ZENML_STEP_OPERATOR": "True",
            "ZENML_STORE_POOL_SIZE": 20,
        }
    )
    assert plain == {
        "ZENML_STORE_URL": "https://zenml.example.com",
        "DISABLE_CREDENTIALS_DISK_CACHING": "true",
        "ZENML_STEP_OPERATOR": "True",
        "ZENML_STORE_POOL_SIZE": "20",
    }
    assert secret == {
        "ZENML_STORE_API_TOKEN": TOKEN,
        "ZENML_STORE_PASSWORD": "hunter2-is-long-enough",
    }


@pytest.mark.parametrize(
    ("memory", "quantity"),
    [
        ("100B", "100"),
        ("5KB", "5k"),
        ("5KiB", "5Ki"),
        ("512MB", "512M"),
        ("512MiB", "512Mi"),
        ("16GB", "16G"),
        ("16GiB", "16Gi"),
        ("1TB", "1T"),
        ("1TiB", "1Ti"),
        ("1PB", "1P"),
        ("1PiB", "1Pi"),
    ],
)
def test_zenml_resource_settings_become_requests(
    memory: str, quantity: str, render: Render
) -> None:
    rs = ZenMLResources(cpu_count=0.5, gpu_count=2, memory=memory, gpu_class="ignored")
    job = render(step_resources=rs).job
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "500m", "memory": quantity, "nvidia.com/gpu": "2"}
    assert resources["limits"] == {"memory": quantity, "nvidia.com/gpu": "2"}


# -- the Job the real core renders for a ZenML step (nothing is sent) ----------------------------


def step_run_info(
    *,
    settings: dict[str, Any] | None = None,
    resources: ZenMLResources | None = None,
    image: str | None = "registry.example.com/steps:1",
    docker: DockerSettings | None = None,
    step_run_id: uuid.UUID | None = None,
    run_id: uuid.UUID | None = None,
) -> Any:
    """What ZenML's StepRunInfo offers the operator."""

    def get_image(key: str) -> str:
        assert key == "kubernetes_job_step_operator"
        if image is None:
            raise RuntimeError("Missing build for snapshot 1234.")
        return image

    return SimpleNamespace(
        step_run_id=step_run_id or uuid.uuid4(),
        run_id=run_id or uuid.uuid4(),
        run_name="nightly",
        pipeline_step_name="train",
        config=SimpleNamespace(
            settings=settings or {},
            resource_settings=resources or ZenMLResources(),
            docker_settings=docker or DockerSettings(),
        ),
        pipeline=SimpleNamespace(name="p"),
        get_image=get_image,
    )


NOWHERE = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
    "current-context": "x",
}


@pytest.fixture
def kubeconfig(tmp_path: Path) -> str:
    """A kubeconfig whose server nothing listens on: rendering sends nothing."""
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(NOWHERE))
    return str(path)


Render = Any


@pytest.fixture
def render(kubeconfig: str) -> Render:
    """The Job the operator would submit for a ZenML step (with the component ``config``)."""

    def render(
        env: dict[str, str] | None = None,
        *,
        step_resources: ZenMLResources | None = None,
        info: Any = None,
        **config: Any,
    ) -> Any:
        operator = make_operator(namespace="ml", kubeconfig_path=kubeconfig, **config)
        return operator._step_run(
            info or step_run_info(resources=step_resources), ["python", "-m", "x"], env or {}
        )

    return render


def test_server_mode_token_goes_into_the_jobs_own_secret(render: Render) -> None:
    environment = {
        "ZENML_STORE_TYPE": "rest",
        "ZENML_STORE_URL": "https://zenml.example.com",
        "ZENML_STORE_API_TOKEN": TOKEN,
        "DISABLE_CREDENTIALS_DISK_CACHING": "true",
        "ZENML_STEP_OPERATOR": "True",
    }
    run = render(environment)
    job = run.job
    assert TOKEN not in json.dumps(job)
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    secret_name = job["metadata"]["name"] + "-env"
    assert env["ZENML_STORE_API_TOKEN"] == {
        "name": "ZENML_STORE_API_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": secret_name, "key": "ZENML_STORE_API_TOKEN"}},
    }
    for name in ("ZENML_STORE_URL", "ZENML_STORE_TYPE", "DISABLE_CREDENTIALS_DISK_CACHING"):
        assert env[name]["value"] == environment[name]
    # The Secret the core creates right after the Job, owned by it.
    assert run.companion is not None
    secret = run.companion({**job, "metadata": {**job["metadata"], "uid": "u-1"}})
    assert secret["metadata"]["name"] == secret_name
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "Job"
    assert base64.b64decode(secret["data"]["ZENML_STORE_API_TOKEN"]).decode() == TOKEN


def test_local_mode_job_without_a_server(render: Render) -> None:
    job = render(
        {"ZENML_STORE_URL": "sqlite:////home/u/.config/zenml/local_stores/x/zenml.db"},
        local=True,
        local_stores_claim="zenml-stores",
        pod_security_profile="none",
    ).job
    spec = job["spec"]["template"]["spec"]
    assert {
        "name": "zenml-local-stores",
        "persistentVolumeClaim": {"claimName": "zenml-stores"},
    } in (spec["volumes"])
    (step,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in step["env"]}
    assert env["ZENML_LOCAL_STORES_PATH"] == step["volumeMounts"][-1]["mountPath"]
    assert spec["securityContext"]["runAsUser"] == os.getuid()
    assert not [k for e in step["env"] for k in e if k == "valueFrom"]


def test_component_gpu_type_leaves_cpu_steps_alone(render: Render) -> None:
    cpu = render(gpu_type="NVIDIA-H100-80GB-HBM3").job
    assert "nodeSelector" not in cpu["spec"]["template"]["spec"]
    gpu = render(gpu_type="NVIDIA-H100-80GB-HBM3", step_resources=ZenMLResources(gpu_count=1)).job
    assert gpu["spec"]["template"]["spec"]["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"
    }


def test_image_from_settings_then_the_build_then_a_skip_build_parent(render: Render) -> None:
    assert _image(render(image="x.example/own:1").job) == "x.example/own:1"
    assert _image(render().job) == "registry.example.com/steps:1"
    parent = DockerSettings(parent_image="x.example/parent:2", skip_build=True)
    parented = render(info=step_run_info(image=None, docker=parent)).job
    assert _image(parented) == "x.example/parent:2"
    with pytest.raises(RuntimeError, match="Missing build"):
        render(info=step_run_info(image=None))


def _image(job: dict[str, Any]) -> str:
    return str(job["spec"]["template"]["spec"]["containers"][0]["image"])


def test_one_job_name_per_step_run(render: Render) -> None:
    run_id = uuid.uuid4()
    first = render(info=step_run_info(run_id=run_id, step_run_id=uuid.uuid4())).job
    again = render(info=step_run_info(run_id=run_id, step_run_id=first_id(first))).job
    retry = render(info=step_run_info(run_id=run_id, step_run_id=uuid.uuid4())).job
    assert first["metadata"]["name"] == again["metadata"]["name"]
    assert retry["metadata"]["name"] != first["metadata"]["name"]


def first_id(job: dict[str, Any]) -> uuid.UUID:
    return uuid.UUID(job["metadata"]["annotations"]["k8s-step-operator.io/step-run-id"])


def test_docker_builds_for_the_steps_this_component_runs() -> None:
    operator = make_operator()
    docker = DockerSettings(parent_image="x:1", skip_build=True)

    def step(uses: bool | str | None) -> Any:
        def uses_step_operator(name: str) -> bool:
            return uses is True or uses == name

        return SimpleNamespace(
            config=SimpleNamespace(docker_settings=docker, uses_step_operator=uses_step_operator)
        )

    snapshot = SimpleNamespace(
        step_configurations={"a": step(True), "b": step(None), "c": step("k8s"), "d": step("x")}
    )
    builds = operator.get_docker_builds(snapshot)  # type: ignore[arg-type]
    assert [(b.key, b.step_name) for b in builds] == [
        ("kubernetes_job_step_operator", "a"),
        ("kubernetes_job_step_operator", "c"),
    ]
    assert builds[0].settings == docker


# -- what the calls ask of the core ---------------------------------------------------------------


class RecordingCore:
    """Stands in for the core operator: records calls, answers as told."""

    def __init__(self, *, error: BaseException | None = None, status: Any = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.error = error
        self.status = status

    def namespace_of(self, settings: CoreSettings) -> str:
        return settings.namespace or "context-ns"

    def attach(self, step: Any, *, namespace: str | None = None, settings: Any = None) -> Any:
        where = namespace or self.namespace_of(settings)

        def follow_or_clean_up(*, interrupts: Any) -> None:
            self.calls.append(("follow", (where, step, interrupts)))
            if self.error is not None:
                raise self.error

        return SimpleNamespace(follow_or_clean_up=follow_or_clean_up)

    def status_of(self, namespace: str, step: Any, *, ranks: int = 1) -> Any:
        self.calls.append(("status_of", (namespace, step)))
        return self.status

    def cancel_step(self, namespace: str, step: Any, settings: Any) -> None:
        self.calls.append(("cancel_step", (namespace, step)))


def step_run(settings: dict[str, Any] | None = None) -> Any:
    """What ZenML's StepRunResponse offers: ids, the invocation id as its name, the config."""
    return SimpleNamespace(
        id=uuid.uuid4(),
        pipeline_run_id=uuid.uuid4(),
        name="train",
        config=SimpleNamespace(settings=settings or {}),
    )


def with_core(operator: KubernetesJobStepOperator, core: RecordingCore) -> None:
    operator.__dict__["_core"] = core


def test_wait_follows_the_step_runs_job_with_zenmls_interrupts() -> None:
    operator = make_operator(namespace="ml")
    core = RecordingCore()
    with_core(operator, core)
    run = step_run({"step_operator:k8s": {"namespace": "other"}})
    assert operator.wait(run) is ZenMLStatus.COMPLETED
    ((call, (namespace, step, interrupts)),) = core.calls
    assert (call, namespace) == ("follow", "other")
    assert (step.run_id, step.step_name, step.step_run_id) == (
        str(run.pipeline_run_id),
        "train",
        str(run.id),
    )
    assert RunInterruptedException in interrupts
    assert RunStoppedException in interrupts
    assert KeyboardInterrupt in interrupts


def test_wait_raises_the_diagnosis_and_gives_it_to_zenml() -> None:
    from zenml.orchestrators import publish_utils

    error = StepFailedError(
        "step failed", job="train-1", namespace="ml", exit_code=3, log_tail=["Traceback", "boom"]
    )
    operator = make_operator(namespace="ml")
    with_core(operator, RecordingCore(error=error))
    token = publish_utils.step_exception_info.set(None)
    try:
        with pytest.raises(StepFailedError):
            operator.wait(step_run())
        info = publish_utils.step_exception_info.get()
    finally:
        publish_utils.step_exception_info.reset(token)
    assert info is not None and info.message is not None
    assert "exit code 3" in info.message and "boom" in info.message
    assert "StepFailedError" in info.traceback


@pytest.mark.parametrize("status", list(ExecutionStatus))
def test_get_status_maps_every_core_status_to_zenmls(status: ExecutionStatus) -> None:
    operator = make_operator(namespace="ml")
    core = RecordingCore(status=status)
    with_core(operator, core)
    got = operator.get_status(step_run())
    assert isinstance(got, ZenMLStatus)
    # Queued (by Kueue) is provisioning to ZenML's dynamic runner, which would otherwise take
    # the step for ended.
    expected = "provisioning" if status is ExecutionStatus.QUEUED else status.value
    assert got.value == expected


def test_cancel_and_cleanup() -> None:
    operator = make_operator()
    core = RecordingCore()
    with_core(operator, core)
    run = step_run()
    operator.cancel(run)
    assert core.calls == [
        ("cancel_step", ("context-ns", _convert.identity(run))),
    ]
    operator.cleanup_step_submission(run)
    assert len(core.calls) == 1


# -- the stack check ---------------------------------------------------------------------------


def facts(**changes: Any) -> StackFacts:
    base: dict[str, Any] = dict(
        component="k8s",
        local=False,
        claim=None,
        restricted=True,
        run_as_user=None,
        uid=1000,
        store_is_local=False,
        store_url="https://zenml.example.com",
        artifact_store="s3",
        artifact_store_is_local=False,
        stores_path="/home/u/.config/zenml/local_stores",
    )
    base.update(changes)
    return StackFacts(**base)


def test_a_server_and_a_remote_artifact_store_pass() -> None:
    assert check_stack(facts()) == (True, "")


def test_a_local_store_without_local_mode_is_refused_saying_what_works() -> None:
    ok, why = check_stack(
        facts(store_is_local=True, store_url="sqlite:////x/zenml.db", artifact_store_is_local=True)
    )
    assert not ok
    assert "the ZenML store is local (sqlite:////x/zenml.db)" in why
    assert "the artifact store 's3' is a local directory" in why
    assert "zenml login <url>" in why
    assert "zenml step-operator update k8s --local=true --local_stores_claim=<claim>" in why


def test_local_mode_needs_a_claim_and_a_user_the_profile_allows() -> None:
    ok, why = check_stack(facts(local=True))
    assert not ok and "--local_stores_claim=<claim>" in why
    ok, why = check_stack(facts(local=True, claim="c", uid=0))
    assert not ok and "--pod_security_profile=none" in why and "non-root" in why
    assert check_stack(facts(local=True, claim="c", uid=0, restricted=False)) == (True, "")
    assert check_stack(facts(local=True, claim="c", uid=0, run_as_user=1000)) == (True, "")
    assert check_stack(facts(local=True, claim="c", store_is_local=True)) == (True, "")


def test_polling_follows_the_job_in_a_thread_whose_end_cleanup_records() -> None:
    """The dynamic-pipeline runner polls get_status and never calls wait."""
    from datetime import UTC

    from k8s_step_operator import Finished, Timeline

    operator = make_operator(namespace="ml")
    core = RecordingCore(status=ExecutionStatus.RUNNING)
    with_core(operator, core)
    run = step_run()
    recorded: list[Any] = []
    operator._record = lambda step_run, finished: recorded.append((step_run, finished))  # type: ignore[method-assign]

    original = core.attach

    def attach(step: Any, **kwargs: Any) -> Any:
        followed = original(step, **kwargs)

        def follow_or_clean_up(*, interrupts: Any) -> None:
            followed.follow_or_clean_up(interrupts=interrupts)
            operator.recorder.on_event(
                Finished(
                    at=datetime.now(UTC),
                    step="train",
                    job="j",
                    namespace="ml",
                    step_run_id=step.step_run_id,
                    succeeded=True,
                    timeline=Timeline(node="n"),
                )
            )

        return SimpleNamespace(follow_or_clean_up=follow_or_clean_up)

    core.attach = attach  # type: ignore[method-assign]
    assert operator.get_status(run) is ZenMLStatus.RUNNING
    assert operator.get_status(run) is ZenMLStatus.RUNNING
    operator.cleanup_step_submission(run)
    follows = [c for c in core.calls if c[0] == "follow"]
    assert len(follows) == 1, core.calls
    assert follows[0][1][2] == ()  # a thread: no interrupt reaches it
    ((recorded_run, finished),) = recorded
    assert recorded_run is run and finished.timeline.node == "n"
    # Nothing is kept once recorded.
    assert list(operator.recorder.pending()) == []


def test_addresses_pods_cannot_reach_are_refused_naming_the_component() -> None:
    ok, why = check_stack(facts(store_url="http://127.0.0.1:8237"))
    assert not ok
    assert why.startswith("step operator 'k8s' ")
    assert "http://127.0.0.1:8237" in why and "loopback" in why
    assert "ZENML_STORE_URL" in why and "zenml login" in why
    # The orchestrator's pods get another address: that is the one that counts.
    assert check_stack(
        facts(
            store_url="http://127.0.0.1:8237",
            pod_store_url="http://zenml.zenml.svc.cluster.local:8080",
        )
    ) == (True, "")
    ok, why = check_stack(facts(artifact_store_endpoint="http://localhost:8333"))
    assert not ok and "artifact store 's3''s endpoint http://localhost:8333" in why
    assert "--client_kwargs" in why
    url = "http://zenml.nowhere.svc.cluster.local:8080"
    ok, why = check_stack(
        facts(store_url=url, missing_services={url: ClusterService("zenml", "nowhere")})
    )
    assert not ok and "Service zenml in namespace nowhere" in why and "cannot resolve" in why


def test_an_identity_without_the_rbac_is_refused_saying_what_it_lacks() -> None:
    ok, why = check_stack(
        facts(
            identity="the ServiceAccount zenml/default of ZenML's step pods",
            namespace="ml",
            missing_permissions=("create jobs.batch", "create secrets"),
        )
    )
    assert not ok
    assert "the ServiceAccount zenml/default of ZenML's step pods may not create jobs.batch, " in (
        why
    )
    assert "in namespace ml" in why and "--step_pod_service_account_name=" in why
    assert "helm install" in why


def test_local_mode_cannot_serve_a_remote_orchestrator() -> None:
    ok, why = check_stack(
        facts(
            local=True,
            claim="c",
            orchestrator="k8s-orchestrator",
            orchestrator_flavor="kubernetes",
            orchestrator_is_remote=True,
        )
    )
    assert not ok and "'k8s-orchestrator' (kubernetes)" in why and "--local=false" in why


def test_urls_naming_cluster_services_and_loopback() -> None:
    assert cluster_service("http://zenml.ml.svc.cluster.local:8080") == ClusterService(
        "zenml", "ml"
    )
    assert cluster_service("http://seaweedfs.k8sso-system.svc:8333") == ClusterService(
        "seaweedfs", "k8sso-system"
    )
    assert cluster_service("https://zenml.example.com") is None
    assert cluster_service("https://s3.eu-west-1.amazonaws.com") is None
    for url in ("http://127.0.0.1:1", "http://localhost", "http://[::1]:8", "http://0.0.0.0:9"):
        assert is_loopback(url), url
    for url in ("http://10.0.0.1", "https://zenml.example.com", "not a url"):
        assert not is_loopback(url), url


def test_a_zenml_steps_pod_shares_its_process_namespace_unless_told(render: Render) -> None:
    """ZenML's entrypoint is the container's PID 1 and ignores SIGTERM: a stopped step would
    keep its GPUs for the grace period. With the pause process as PID 1 it exits at once."""
    pod = render().job["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True
    told = render(pod_spec_overrides={"shareProcessNamespace": False}).job
    assert told["spec"]["template"]["spec"]["shareProcessNamespace"] is False


@pytest.mark.parametrize(
    "key", ["step_operator:other", "step_operator.kubernetes-job", "kubernetes_job"]
)
def test_settings_meant_for_a_step_operator_but_read_by_none_are_warned(
    key: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Only warned: ZenML passes a pipeline's settings for other stacks' components along.
    operator = make_operator(shm_size="1Gi")
    with caplog.at_level(logging.WARNING, logger="k8s_step_operator"):
        merged = operator.get_settings(container({key: {"shm_size": "9Gi"}}))
        operator.get_settings(container({key: {"shm_size": "9Gi"}}))
    assert merged.shm_size == "1Gi"
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("k8s_step_operator")]
    assert warnings == [
        f"settings under {key!r} are read by no step operator of this stack: step operator "
        "'k8s' reads 'step_operator:k8s' or 'step_operator.kubernetes_job'"
    ]


def test_zenml_refuses_or_warns_about_such_keys_when_it_compiles(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What a ZenML user sees before the step runs: a key without its type is refused when the
    # step is defined; one that names no component of the stack is dropped with a warning.
    from zenml.enums import StackComponentType as ZenMLType
    from zenml.utils import settings_utils

    with pytest.raises(ValueError, match="Invalid setting key `kubernetes_job`"):
        settings_utils.validate_setting_keys(["kubernetes_job"])
    operator = make_operator()
    settings: dict[str, Any] = {"step_operator.kubernetes-job": {"gpu_type": "H100"}}
    with caplog.at_level(logging.WARNING):
        settings_utils.normalize_stack_component_setting_keys(
            settings, components_by_type={ZenMLType.STEP_OPERATOR: [operator]}
        )
    assert settings == {}
    assert "Ignoring settings key `step_operator.kubernetes-job`" in caplog.text
