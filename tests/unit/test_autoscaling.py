"""Steps on autoscaled GPU pools: wait while a node is added, fail at once when none will be.

The cluster is the in-memory API with a static GPU node; Karpenter (NodePools, its events on the
pod) or the cluster autoscaler (its status ConfigMap, its events) are simulated by what they
write. Time is fake: scale-up and pending time-outs take no real time.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from k8s_step_operator import (
    KubernetesJobStepOperatorSettings,
    ResourceSettings,
    StepConfiguration,
    StepRunInfo,
    UnschedulableError,
    build_job,
)
from k8s_step_operator._runner.autoscaler import latest_signal, nodepools_admitting
from k8s_step_operator._runner.step_run import StepIdentity, StepRun

from .fakes import FakeClock, FakeKube, SyncWatchers

NS = "ml"
POOL = "k8s-step-operator.io/pool"
STATIC = {
    "metadata": {"name": "gpu-h100-0", "labels": {POOL: "h100"}},
    "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
    "status": {"allocatable": {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": "8"}},
}


def nodepool(name: str, pool: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"labels": {POOL: pool}},
                "spec": {
                    "requirements": [
                        {
                            "key": "node.kubernetes.io/instance-type",
                            "operator": "In",
                            "values": ["x"],
                        }
                    ],
                    "taints": [
                        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
                        {
                            "key": "k8s-step-operator.io/autoscaled",
                            "value": pool,
                            "effect": "NoSchedule",
                        },
                    ],
                },
            },
            "limits": {"nvidia.com/gpu": "16"},
        },
    }


TOLERATIONS = [
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "k8s-step-operator.io/autoscaled", "operator": "Exists", "effect": "NoSchedule"},
]


def make(
    pool: str = "autoscaled-h100", gpus: int = 8, **overrides: Any
) -> tuple[FakeKube, StepRun]:
    clock = FakeClock()
    kube = FakeKube(clock)
    kube.nodes = [STATIC]
    settings = KubernetesJobStepOperatorSettings(
        namespace=NS,
        image="img:1",
        stream_logs=False,
        node_selector={POOL: pool},
        tolerations=TOLERATIONS,
        **overrides,
    )
    info = StepRunInfo(
        step_run_id="sr",
        run_id="run",
        pipeline_step_name="train",
        config=StepConfiguration(resource_settings=ResourceSettings(gpu_count=gpus)),
    )
    job = build_job(info, ["python"], {}, settings)
    run = StepRun(
        kube,
        job,
        step=StepIdentity("run", "train", "sr"),
        settings=settings,
        clock=clock,
        watchers=SyncWatchers(kube),
    )
    return kube, run


SCHED_MSG = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."


def unschedulable(kube: FakeKube, job: dict[str, Any]) -> None:
    kube.set_pod(
        job,
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": SCHED_MSG,
            }
        ],
    )


def pod_event(kube: FakeKube, job: dict[str, Any], reason: str, message: str, source: str) -> None:
    pod = f"{job['metadata']['name']}-abcde"
    kube.add_event(NS, "Pod", pod, reason, message, etype="Normal", source=source)


def runs_to_completion(kube: FakeKube, job: dict[str, Any]) -> None:
    kube.set_pod(
        job,
        spec={"nodeName": "kwok-autoscaled-h100-x"},
        phase="Succeeded",
        conditions=[{"type": "PodScheduled", "status": "True"}],
        containerStatuses=[
            {"name": "step", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
        ],
    )
    kube.set_job_condition(job, "Complete")


def script(kube: FakeKube, *steps: tuple[float, Any]) -> None:
    def on_create(job: dict[str, Any]) -> None:
        for delay, action in steps:
            name = job["metadata"]["name"]
            kube.clock.after(delay, lambda action=action, name=name: action(kube.job(NS, name)))

    kube.on_create = on_create


def test_a_step_on_a_pool_at_zero_waits_for_karpenter_and_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube, run = make()
    kube.nodepools = [nodepool("autoscaled-h100", "autoscaled-h100")]
    nominated = "Pod should schedule on: nodeclaim/autoscaled-h100-9pk2f"
    script(
        kube,
        (0.5, lambda j: unschedulable(kube, j)),
        (3, lambda j: pod_event(kube, j, "Nominated", nominated, "karpenter")),
        (20, lambda j: runs_to_completion(kube, j)),
    )
    caplog.set_level(logging.INFO, "k8s_step_operator")
    run.run()
    text = caplog.text
    assert (
        "scaling up - a node is being added: Karpenter: Pod should schedule on: nodeclaim/" in text
    )
    assert "succeeded" in text
    assert kube.count("delete_job") == 0


def test_no_nodepool_allows_the_step_fails_at_once_naming_them() -> None:
    kube, run = make(pool="nowhere")
    kube.nodepools = [nodepool("autoscaled-h100", "autoscaled-h100")]
    script(kube, (0.5, lambda j: unschedulable(kube, j)))
    with pytest.raises(UnschedulableError) as raised:
        run.run()
    message = str(raised.value)
    assert (
        "NodePool autoscaled-h100: its nodes never have k8s-step-operator.io/pool=nowhere"
        in message
    )
    assert kube.clock.t - 1000 < 2


def test_karpenter_refusing_fails_at_once_in_its_words() -> None:
    kube, run = make()
    kube.nodepools = [nodepool("autoscaled-h100", "autoscaled-h100")]
    refusal = (
        "Failed to schedule pod, incompatible requirements, key node.kubernetes.io/instance-type, "
        "node.kubernetes.io/instance-type In [gpu-b200x8] not in node.kubernetes.io/instance-type "
        "In [gpu-h100x8]"
    )
    script(
        kube,
        (0.5, lambda j: unschedulable(kube, j)),
        (2, lambda j: pod_event(kube, j, "FailedScheduling", refusal, "karpenter")),
    )
    with pytest.raises(UnschedulableError) as raised:
        run.run()
    assert "Karpenter will not add one: Failed to schedule pod, incompatible requirements" in str(
        raised.value
    )
    assert kube.clock.t - 1000 < 4


def test_a_nodepool_at_its_limit_is_reported_and_waited_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube, run = make(pending_timeout=120)
    kube.nodepools = [nodepool("autoscaled-h100", "autoscaled-h100")]
    limited = (
        "Failed to schedule pod, all available instance types exceed limits for nodepool "
        "(NodePool=autoscaled-h100)"
    )
    script(
        kube,
        (0.5, lambda j: unschedulable(kube, j)),
        (2, lambda j: pod_event(kube, j, "FailedScheduling", limited, "karpenter")),
    )
    caplog.set_level(logging.INFO, "k8s_step_operator")
    with pytest.raises(UnschedulableError) as raised:
        run.run()
    assert "exceed limits for nodepool (NodePool=autoscaled-h100)" in str(raised.value)
    assert "pending timeout" in str(raised.value)
    assert 120 <= kube.clock.t - 1000 <= 123
    assert "exceed limits for nodepool" in caplog.text  # said while waiting, not only at the end


def test_a_scale_up_that_never_brings_a_node_is_bounded() -> None:
    kube, run = make(scale_up_timeout=300)
    kube.nodepools = [nodepool("autoscaled-h100", "autoscaled-h100")]
    nominated = "Pod should schedule on: nodeclaim/autoscaled-h100-zzzzz"
    script(
        kube,
        (0.5, lambda j: unschedulable(kube, j)),
        (1, lambda j: pod_event(kube, j, "Nominated", nominated, "karpenter")),
    )
    with pytest.raises(UnschedulableError) as raised:
        run.run()
    assert "scale-up (scale_up_timeout)" in str(raised.value)
    assert 300 <= kube.clock.t - 1000 <= 304


def test_without_any_autoscaler_a_never_fitting_step_fails_at_once() -> None:
    kube, run = make()
    script(kube, (0.5, lambda j: unschedulable(kube, j)))
    with pytest.raises(UnschedulableError) as raised:
        run.run()
    assert "no node could ever fit this pod" in str(raised.value)
    assert kube.clock.t - 1000 < 2


def test_the_cluster_autoscaler_is_waited_for_and_its_refusal_ends_the_wait() -> None:
    kube, run = make()
    kube.configmaps[("kube-system", "cluster-autoscaler-status")] = {"metadata": {}}
    refusal = "pod didn't trigger scale-up: 2 node(s) didn't match Pod's node affinity/selector"
    script(
        kube,
        (0.5, lambda j: unschedulable(kube, j)),
        (12, lambda j: pod_event(kube, j, "NotTriggerScaleUp", refusal, "cluster-autoscaler")),
    )
    with pytest.raises(UnschedulableError) as raised:
        run.run()
    assert "the cluster autoscaler will not add one: pod didn't trigger scale-up" in str(
        raised.value
    )
    assert 12 <= kube.clock.t - 1000 <= 14


def test_a_busy_static_pool_is_not_failed_by_an_autoscalers_refusal() -> None:
    # The pod fits the static node (when it frees up): Karpenter's "not for my pools" must not
    # fail it; the pending timeout decides.
    kube, run = make(pool="h100", pending_timeout=60)
    kube.nodepools = [nodepool("autoscaled-h100", "autoscaled-h100")]
    refusal = (
        "Failed to schedule pod, did not tolerate taint (taint=k8s-step-operator.io/autoscaled=x)"
    )
    script(
        kube,
        (0.5, lambda j: unschedulable(kube, j)),
        (2, lambda j: pod_event(kube, j, "FailedScheduling", refusal, "karpenter")),
    )
    with pytest.raises(UnschedulableError) as raised:
        run.run()
    assert "pending timeout" in str(raised.value)
    assert kube.clock.t - 1000 >= 60


def test_latest_autoscaler_word_wins_and_the_scheduler_is_not_an_autoscaler() -> None:
    def ev(reason: str, message: str, source: str) -> dict[str, Any]:
        return {
            "involvedObject": {"kind": "Pod", "name": "p"},
            "reason": reason,
            "message": message,
            "source": {"component": source},
        }

    events = [
        ev("Nominated", "Pod should schedule on: nodeclaim/a-1", "karpenter"),
        ev("FailedScheduling", "0/3 nodes are available", "default-scheduler"),
    ]
    signal = latest_signal(events, "p")
    assert signal is not None and signal.scaling_up and signal.nodeclaim == "a-1"
    events.append(ev("FailedScheduling", "Failed to schedule pod, x", "karpenter"))
    later = latest_signal(events, "p")
    assert later is not None and not later.scaling_up and not later.limited
    assert latest_signal(events[1:2], "p") is None


def test_nodepool_check_judges_labels_requirements_and_taints() -> None:
    pool = nodepool("np", "gpus")
    pod = {"nodeSelector": {POOL: "gpus"}, "tolerations": TOLERATIONS}
    assert nodepools_admitting(pod, [pool]) == (["np"], [])
    _, refused = nodepools_admitting({**pod, "tolerations": TOLERATIONS[:1]}, [pool])
    assert refused == [
        "NodePool np: its nodes carry the taint k8s-step-operator.io/autoscaled=gpus:NoSchedule "
        "(a step meant for it tolerates it: {key: k8s-step-operator.io/autoscaled, operator: "
        "Equal, value: gpus, effect: NoSchedule})"
    ]
    instance = {**pod, "nodeSelector": {POOL: "gpus", "node.kubernetes.io/instance-type": "y"}}
    _, refused = nodepools_admitting(instance, [pool])
    assert refused == ["NodePool np: its nodes never have node.kubernetes.io/instance-type=y"]
    # A label the NodePool leaves to the instance type (the GPU model) gets the benefit of doubt.
    model = {**pod, "nodeSelector": {POOL: "gpus", "nvidia.com/gpu.product": "NVIDIA-B200"}}
    assert nodepools_admitting(model, [pool])[0] == ["np"]


def test_an_autoscaler_the_identity_cannot_see_is_given_a_moment_to_speak() -> None:
    from k8s_step_operator import ForbiddenError

    kube, run = make(pending_timeout=600)
    forbidden = ForbiddenError("configmaps is forbidden", status=403, reason="Forbidden")
    kube.fail("get_configmap", forbidden, times=100)
    script(kube, (0.5, lambda j: unschedulable(kube, j)))
    with pytest.raises(UnschedulableError) as raised:
        run.run()
    assert "no autoscaler spoke" in str(raised.value)
    assert 20 <= kube.clock.t - 1000 <= 23  # not the pending timeout, not at once


# -- Karpenter and another autoscaler in one cluster -------------------------------------------

REFUSAL = (
    "Failed to schedule pod, incompatible requirements, key k8s-step-operator.io/pool, "
    "k8s-step-operator.io/pool In [elsewhere] not in k8s-step-operator.io/pool In [autoscaled-h100]"
)


def test_another_autoscalers_scale_up_outweighs_karpenters_no(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The step used to fail at 0.56 s on Karpenter's "no" while the cluster autoscaler was
    # adding a node for it (the node came 5 s later).
    kube, run = make(pool="elsewhere")
    kube.nodepools = [nodepool("autoscaled-h100", "autoscaled-h100")]
    kube.configmaps[("kube-system", "cluster-autoscaler-status")] = {"metadata": {}}
    scale_up = "pod triggered scale-up: [{gpu-pool-a 0->1 (max: 4)}]"
    script(
        kube,
        (0.5, lambda j: unschedulable(kube, j)),
        (0.56, lambda j: pod_event(kube, j, "FailedScheduling", REFUSAL, "karpenter")),
        (4, lambda j: pod_event(kube, j, "TriggeredScaleUp", scale_up, "cluster-autoscaler")),
        (9, lambda j: runs_to_completion(kube, j)),
    )
    caplog.set_level(logging.INFO, "k8s_step_operator")
    run.run()
    assert "a node is being added: the cluster autoscaler: pod triggered scale-up" in caplog.text
    assert kube.count("delete_job") == 0


def test_a_scale_up_stays_one_when_another_autoscaler_says_no_afterwards(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube, run = make(pool="elsewhere", scale_up_timeout=60)
    kube.nodepools = [nodepool("autoscaled-h100", "autoscaled-h100")]
    kube.configmaps[("kube-system", "cluster-autoscaler-status")] = {"metadata": {}}
    scale_up = "pod triggered scale-up: [{gpu-pool-a 0->1 (max: 4)}]"
    script(
        kube,
        (0.5, lambda j: unschedulable(kube, j)),
        (1, lambda j: pod_event(kube, j, "TriggeredScaleUp", scale_up, "cluster-autoscaler")),
        (2, lambda j: pod_event(kube, j, "FailedScheduling", REFUSAL, "karpenter")),
    )
    with pytest.raises(UnschedulableError) as raised:
        run.run()
    # Bounded by scale_up_timeout, not failed on Karpenter's word.
    assert "no node after 60s of scale-up (scale_up_timeout)" in str(raised.value)
    assert kube.clock.t - 1000 >= 60


def test_never_needs_every_autoscaler_present_to_agree() -> None:
    kube, run = make(pool="elsewhere")
    kube.nodepools = [nodepool("autoscaled-h100", "autoscaled-h100")]
    kube.configmaps[("kube-system", "cluster-autoscaler-status")] = {"metadata": {}}
    no = "pod didn't trigger scale-up: 2 node(s) didn't match Pod's node affinity/selector"
    script(
        kube,
        (0.5, lambda j: unschedulable(kube, j)),
        (0.56, lambda j: pod_event(kube, j, "FailedScheduling", REFUSAL, "karpenter")),
        (12, lambda j: pod_event(kube, j, "NotTriggerScaleUp", no, "cluster-autoscaler")),
    )
    with pytest.raises(UnschedulableError) as raised:
        run.run()
    message = str(raised.value)
    assert "neither Karpenter nor the cluster autoscaler will add one" in message, message
    assert "Karpenter: Failed to schedule pod" in message
    assert "the cluster autoscaler: pod didn't trigger scale-up" in message
    assert 12 <= kube.clock.t - 1000 <= 14  # not at Karpenter's word, at the second one


def test_each_autoscalers_latest_word_is_kept() -> None:
    from k8s_step_operator._runner.autoscaler import latest_signals

    def ev(reason: str, message: str, source: str) -> dict[str, Any]:
        return {
            "involvedObject": {"kind": "Pod", "name": "p"},
            "reason": reason,
            "message": message,
            "source": {"component": source},
        }

    events = [
        ev("TriggeredScaleUp", "pod triggered scale-up", "cluster-autoscaler"),
        ev("FailedScheduling", "Failed to schedule pod, x", "karpenter"),
    ]
    signals = latest_signals(events, "p")  # type: ignore[arg-type]
    assert [(s.source, s.scaling_up) for s in signals] == [
        ("cluster-autoscaler", True),
        ("karpenter", False),
    ]
