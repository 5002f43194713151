"""A two-step pipeline on the local cluster: ``prepare`` on a CPU, then ``train`` on a GPU.

Each step is launched with ``KubernetesJobStepOperator.launch`` exactly as a pipeline framework
would: the entrypoint command runs ``python -m k8s_step_operator.entrypoint`` in the step image,
which imports and calls the step function. The phases of each Job and the lines the step prints
are logged as they happen.

When the cluster has a node that runs containers (``make cluster`` starts one where this machine
allows it), the steps run there for real. Otherwise they run on simulated nodes, which only play
the part of a kubelet: the demo says so, and the step's own output is then not produced.

Run it with ``make demo`` (or ``python -m examples.demo`` with ``KUBECONFIG`` set).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from k8s_step_operator import (
    KubernetesJobStepOperator,
    KubernetesJobStepOperatorConfig,
    PipelineConfiguration,
    ResourceSettings,
    StepConfiguration,
    StepOperatorEntrypointConfiguration,
    StepOperatorError,
    StepRunInfo,
)

REAL_NODE_LABEL = "k8s-step-operator.io/real-node"
PYTHON_IMAGE = "localhost/k8s-step-operator-python:dev"
NAMESPACE = os.environ.get("DEMO_NAMESPACE", "demo")
KEY = "step_operator.kubernetes_job"

log = logging.getLogger("demo")


def real_node(api: k8s.ApiClient) -> str | None:
    """The name of a Ready node that runs real containers, if the cluster has one."""
    for node in k8s.CoreV1Api(api).list_node(label_selector=f"{REAL_NODE_LABEL}=true").items:
        ready = {c.type: c.status for c in node.status.conditions or []}.get("Ready")
        if ready == "True":
            return str(node.metadata.name)
    return None


def ensure_namespace(api: k8s.ApiClient) -> None:
    """Create the demo's namespace (Pod Security "restricted") unless it exists."""
    core = k8s.CoreV1Api(api)
    if any(ns.metadata.name == NAMESPACE for ns in core.list_namespace().items):
        return
    core.create_namespace(
        {
            "metadata": {
                "name": NAMESPACE,
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
            }
        }
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(
            sa.metadata.name == "default"
            for sa in core.list_namespaced_service_account(NAMESPACE).items
        ):
            return
        time.sleep(0.2)


def main() -> int:
    """Run the pipeline; 0 when every step succeeded."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03d %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
    )
    # The step's own output, set apart from the operator's lines.
    step_handler = logging.StreamHandler(sys.stdout)
    step_handler.setFormatter(logging.Formatter("             | %(message)s"))
    step_log = logging.getLogger("k8s_step_operator.step")
    step_log.addHandler(step_handler)
    step_log.propagate = False
    kubeconfig = os.environ.get("KUBECONFIG") or str(Path(".cluster/kubeconfig").resolve())
    api = k8s_config.new_client_from_config(config_file=kubeconfig)
    ensure_namespace(api)
    node = real_node(api)
    settings: dict[str, object] = {}
    if node:
        log.info("steps run in real containers on node %s", node)
        # The real node is a GPU node: even the CPU step must tolerate its taints to land there.
        settings["tolerations"] = [
            {"key": REAL_NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"},
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        ]
        settings["node_selector"] = {REAL_NODE_LABEL: "true"}
    else:
        log.info(
            "NOTE: no node that runs containers in this cluster; the steps run on SIMULATED "
            "nodes, which report phases and exit codes but execute nothing"
        )
        settings["pod_annotations"] = {"sim.k8s-step-operator.io/run-duration": "2s"}
    operator = KubernetesJobStepOperator(
        "demo",
        config=KubernetesJobStepOperatorConfig(
            kubeconfig_path=kubeconfig,
            namespace=NAMESPACE,
            image=PYTHON_IMAGE,
            image_pull_policy="IfNotPresent",
            pending_timeout=120,
        ),
    )
    run_id = str(uuid.uuid4())
    steps = [("prepare", 0, "examples.steps:prepare"), ("train", 1, "examples.steps:train")]
    for step, gpus, source in steps:
        info = StepRunInfo(
            step_run_id=str(uuid.uuid4()),
            run_id=run_id,
            run_name="demo",
            pipeline_step_name=step,
            pipeline=PipelineConfiguration(name="demo"),
            config=StepConfiguration(
                name=step,
                resource_settings=ResourceSettings(cpu_count=0.5, memory="256MiB", gpu_count=gpus),
                settings={KEY: settings},
            ),
        )
        entry = StepOperatorEntrypointConfiguration
        command = entry.get_entrypoint_command() + entry.get_entrypoint_arguments(
            step_name=step, step_source=source, step_run_id=info.step_run_id
        )
        log.info("== step %s (%d GPU) ==", step, gpus)
        started = time.monotonic()
        try:
            operator.launch(info, command, {"DEMO_GPUS": str(gpus), "DEMO_EPOCHS": "5"})
        except StepOperatorError as e:
            log.error("step %s failed: %s", step, e)
            return 1
        log.info("== step %s finished in %.1fs ==", step, time.monotonic() - started)
    log.info("pipeline finished: success")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
