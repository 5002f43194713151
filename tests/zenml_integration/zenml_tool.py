"""What the ZenML tests ask of ZenML, each in a process of its own (``python zenml_tool.py ...``).

ZenML keeps its configuration in process-wide singletons, read from ``ZENML_CONFIG_PATH`` once;
a fresh process per action keeps every test's ZenML isolated, exactly as a user's shell would.

    setup ROOT COMPONENT_JSON   zenml init in ROOT; register the flavor, the step operator
                                component "k8s" with that configuration, the stack "s"; activate it
    runs PIPELINE               the last run of PIPELINE and its steps, as JSON
    run PIPELINE                the same with times, run metadata, the steps' logs as the
                                server keeps them and each step's outputs loaded from the
                                artifact store (a ZenML server's client)
    variant JSON                a stack like JSON's "base" with some components changed:
                                "artifact_store" (a name), "s3_endpoint" (the S3 store's
                                endpoint), "orchestrator_env" (variables of the orchestrator's
                                pod), "step_pod_service_account_name"; registered and activated;
                                prints its name
    status STEP_RUN_ID          the step operator's get_status(step run), as a restarted caller
    wait STEP_RUN_ID            its wait(step run)
    cancel STEP_RUN_ID          its cancel(step run)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

FLAVOR_SOURCE = "k8s_step_operator.integrations.zenml.flavor.KubernetesJobStepOperatorFlavor"
COMPONENT = "k8s"
STACK = "s"


def setup(root: str, component: str) -> None:
    from zenml.client import Client
    from zenml.enums import StackComponentType

    Client.initialize(root=Path(root))
    client = Client()
    client.create_flavor(source=FLAVOR_SOURCE, component_type=StackComponentType.STEP_OPERATOR)
    client.create_stack_component(
        name=COMPONENT,
        flavor="kubernetes_job",
        component_type=StackComponentType.STEP_OPERATOR,
        configuration=json.loads(component),
    )
    client.create_stack(
        name=STACK,
        components={
            StackComponentType.ORCHESTRATOR: "default",
            StackComponentType.ARTIFACT_STORE: "default",
            StackComponentType.STEP_OPERATOR: COMPONENT,
        },
    )
    client.activate_stack(STACK)


def runs(pipeline: str) -> dict[str, Any]:
    from zenml.client import Client

    client = Client()
    run = client.get_pipeline(pipeline).last_run
    steps = client.list_run_steps(pipeline_run_id=run.id, sort_by="asc:created", size=100).items
    return {
        "id": str(run.id),
        "name": run.name,
        "status": str(run.status.value),
        "steps": [
            {
                "name": s.name,
                "id": str(s.id),
                "status": str(s.status.value),
                "message": (s.exception_info.message if s.exception_info else None),
                "traceback": (s.exception_info.traceback if s.exception_info else None),
            }
            for s in steps
        ],
    }


def _logs(step: Any) -> list[str]:
    """Every log line the server keeps for a step run, from every source (launcher, step)."""
    from zenml.client import Client
    from zenml.constants import LOGS, STEPS

    store: Any = Client().zen_store
    lines: list[str] = []
    for logs in step.log_collection or []:
        try:
            entries = store.get(f"{STEPS}/{step.id}{LOGS}", params={"logs_id": str(logs.id)})
        except Exception as e:  # a source without entries
            lines.append(f"<no entries for {logs.source}: {e}>")
            continue
        lines += [f"[{logs.source}] {e.get('message', '')}" for e in entries or []]
    return lines


def _outputs(step: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, versions in (step.outputs or {}).items():
        for version in versions:
            out[name] = {"uri": version.uri, "value": repr(version.load())}
    return out


def run_details(pipeline: str) -> dict[str, Any]:
    from zenml.client import Client

    client = Client()
    run = client.get_pipeline(pipeline).last_run
    steps = client.list_run_steps(pipeline_run_id=run.id, sort_by="asc:created", size=100).items
    return {
        "id": str(run.id),
        "name": run.name,
        "status": str(run.status.value),
        "start": run.start_time.timestamp() if run.start_time else None,
        "end": run.end_time.timestamp() if run.end_time else None,
        "steps": [
            {
                "name": s.name,
                "id": str(s.id),
                "status": str(s.status.value),
                "start": s.start_time.timestamp() if s.start_time else None,
                "end": s.end_time.timestamp() if s.end_time else None,
                "message": (s.exception_info.message if s.exception_info else None),
                "metadata": dict(s.run_metadata),
                "logs": _logs(s),
                "outputs": _outputs(s) if s.status.value == "completed" else {},
            }
            for s in steps
        ],
    }


def variant(spec: str) -> str:
    import uuid

    from zenml.client import Client
    from zenml.enums import StackComponentType as T

    client = Client()
    data = json.loads(spec)
    base = client.get_stack(data["base"])
    tag = uuid.uuid4().hex[:6]
    components: dict[T, Any] = {t: cs[0].id for t, cs in base.components.items() if cs}

    def copy(kind: T, changes: dict[str, Any]) -> None:
        old = base.components[kind][0]
        configuration = {**dict(old.configuration), **changes}
        new = client.create_stack_component(
            name=f"{old.name}-{tag}",
            flavor=old.flavor_name,
            component_type=kind,
            configuration=configuration,
        )
        components[kind] = new.id

    if "artifact_store" in data:
        components[T.ARTIFACT_STORE] = data["artifact_store"]
    if "s3_endpoint" in data:
        old = base.components[T.ARTIFACT_STORE][0]
        kwargs = dict(old.configuration.get("client_kwargs") or {})
        copy(T.ARTIFACT_STORE, {"client_kwargs": {**kwargs, "endpoint_url": data["s3_endpoint"]}})
    orchestrator: dict[str, Any] = {}
    if "orchestrator_env" in data:
        old = base.components[T.ORCHESTRATOR][0]
        pod = dict(old.configuration.get("orchestrator_pod_settings") or {})
        pod["env"] = [{"name": k, "value": v} for k, v in data["orchestrator_env"].items()]
        orchestrator["orchestrator_pod_settings"] = pod
    if "step_pod_service_account_name" in data:
        orchestrator["step_pod_service_account_name"] = data["step_pod_service_account_name"]
    if orchestrator:
        copy(T.ORCHESTRATOR, orchestrator)
    name = f"{base.name}-v-{tag}"
    client.create_stack(name=name, components=components)
    client.activate_stack(name)
    return name


def operator_call(action: str, step_run_id: str) -> str:
    from zenml.client import Client

    client = Client()
    operator = client.active_stack.step_operators[COMPONENT]
    step_run = client.get_run_step(step_run_id)
    result = getattr(operator, action)(step_run)
    return str(getattr(result, "value", result))


# Marks the answer among the lines ZenML and the step operator log to stdout: a daemon thread
# (a step's follower) may still log after it.
ANSWER = "zenml_tool answer: "


def answer(text: str) -> None:
    print(f"{ANSWER}{text}", flush=True)


def main(argv: list[str]) -> int:
    action, *args = argv
    if action == "setup":
        setup(*args)
        answer("ok")
    elif action == "runs":
        answer(json.dumps(runs(*args)))
    elif action == "run":
        answer(json.dumps(run_details(*args), default=str))
    elif action == "variant":
        answer(variant(*args))
    elif action in ("status", "wait", "cancel"):
        answer(operator_call("get_status" if action == "status" else action, *args))
    else:
        raise SystemExit(f"unknown action {action!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
