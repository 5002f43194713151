"""The ZenML entrypoint of a step on several nodes, without a cluster: rank 0 is ZenML's step
run, every other rank calls the step function as a worker and writes nothing to ZenML's store.

ZenML's store and runner are stood in for where a test is about which of them a rank calls; the
worker's own path (inputs loaded through ZenML's runner, the function called) is exercised end
to end by the real-node tests.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

zenml = pytest.importorskip("zenml")

from zenml.step_operators import BaseStepOperator  # noqa: E402
from zenml.step_operators.step_operator_entrypoint_configuration import (  # noqa: E402
    StepOperatorEntrypointConfiguration,
)

from k8s_step_operator.integrations.zenml import KubernetesJobStepOperator, ranks  # noqa: E402
from k8s_step_operator.integrations.zenml.ranks import (  # noqa: E402
    RankEntrypointConfiguration,
    current_rank,
)

SNAPSHOT = str(uuid.uuid4())
STEP_RUN = str(uuid.uuid4())


def arguments(cls: Any) -> list[str]:
    return [
        *cls.get_entrypoint_command(),
        *cls.get_entrypoint_arguments(
            snapshot_id=SNAPSHOT, step_name="train", step_run_id=STEP_RUN
        ),
    ]


def test_the_operator_names_our_entrypoint_and_zenml_builds_the_same_command() -> None:
    assert issubclass(RankEntrypointConfiguration, StepOperatorEntrypointConfiguration)
    prop = KubernetesJobStepOperator.entrypoint_config_class
    assert isinstance(prop, property)
    assert prop.fget is not None and prop.fget(None) is RankEntrypointConfiguration  # type: ignore[arg-type]
    # ZenML's default, for comparison.
    assert (
        BaseStepOperator.entrypoint_config_class.fget(None) is StepOperatorEntrypointConfiguration
    )  # type: ignore[attr-defined]
    ours, theirs = (
        arguments(RankEntrypointConfiguration),
        arguments(StepOperatorEntrypointConfiguration),
    )
    # Only the configuration's source differs: the same module, options and values.
    source = ours.index("--entrypoint_config_source") + 1
    assert ours[source] == "k8s_step_operator.integrations.zenml.ranks.RankEntrypointConfiguration"
    assert ours[:source] + ours[source + 1 :] == theirs[:source] + theirs[source + 1 :]


@pytest.mark.parametrize(
    ("environ", "rank"), [({}, 0), ({"NODE_RANK": ""}, 0), ({"NODE_RANK": "3"}, 3)]
)
def test_the_rank_comes_from_node_rank(environ: dict[str, str], rank: int) -> None:
    assert current_rank(environ) == rank


@pytest.mark.parametrize("value", ["-1", "one"])
def test_a_bad_node_rank_is_an_error(value: str) -> None:
    with pytest.raises(ValueError):
        current_rank({"NODE_RANK": value})


class FakeStore:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def get_run_step(self, step_run_id: uuid.UUID) -> Any:
        self.calls.append("get_run_step")
        return SimpleNamespace(id=step_run_id, pipeline_run_id=uuid.uuid4(), inputs={})

    def update_run_step(self, **kwargs: Any) -> Any:
        self.calls.append("update_run_step")
        return SimpleNamespace(id=kwargs["step_run_id"], inputs={})


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    fake = FakeStore()
    client = SimpleNamespace(zen_store=fake)
    monkeypatch.setattr(ranks, "Client", lambda: client)
    return fake


def entrypoint() -> RankEntrypointConfiguration:
    return RankEntrypointConfiguration(
        arguments=arguments(RankEntrypointConfiguration)[3:]  # after `python -m <module>`
    )


def test_rank_0_runs_zenmls_step_run(monkeypatch: pytest.MonkeyPatch, store: FakeStore) -> None:
    monkeypatch.delenv("NODE_RANK", raising=False)
    seen: list[str] = []
    monkeypatch.setattr(
        StepOperatorEntrypointConfiguration,
        "_run_step",
        lambda self, step, snapshot: seen.append("zenml"),
    )
    monkeypatch.setattr(ranks, "run_as_worker", lambda step, step_run: seen.append("worker"))
    config = entrypoint()
    config._run_step(SimpleNamespace(config=SimpleNamespace(name="train")), None)  # type: ignore[arg-type]
    assert seen == ["zenml"]
    assert config.rank == 0


def test_other_ranks_run_the_function_as_workers_and_write_nothing(
    monkeypatch: pytest.MonkeyPatch, store: FakeStore
) -> None:
    monkeypatch.setenv("NODE_RANK", "2")
    seen: list[Any] = []
    monkeypatch.setattr(
        StepOperatorEntrypointConfiguration,
        "_run_step",
        lambda self, step, snapshot: seen.append("zenml"),
    )
    monkeypatch.setattr(
        ranks, "run_as_worker", lambda step, step_run: seen.append(("worker", step_run.id))
    )
    config = entrypoint()
    # A dynamic pipeline's rank 0 would mark the step run running; a worker only reads it.
    config._snapshot = SimpleNamespace(is_dynamic=True)  # type: ignore[attr-defined]
    config._run_step(SimpleNamespace(config=SimpleNamespace(name="train")), None)  # type: ignore[arg-type]
    assert seen == [("worker", uuid.UUID(STEP_RUN))]
    assert store.calls == ["get_run_step"]
    assert config.rank == 2


def test_the_readmes_multi_node_step_defines_a_step_of_four_nodes() -> None:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = text.index("## Multi-node steps\n")
    section = text[start : text.index("\n## ", start + 1)]
    (snippet,) = [
        b.split("```", 1)[0] for b in section.split("```python\n")[1:] if "from zenml" in b
    ]
    namespace: dict[str, object] = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    settings = namespace["train"].configuration.settings  # type: ignore[attr-defined]
    chosen = settings["step_operator:gpu-jobs"].model_dump()
    assert chosen["num_nodes"] == 4 and chosen["queue_name"] == "gpu"
    assert settings["resources"].gpu_count == 8
