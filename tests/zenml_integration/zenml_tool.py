"""What the ZenML tests ask of ZenML, each in a process of its own (``python zenml_tool.py ...``).

ZenML keeps its configuration in process-wide singletons, read from ``ZENML_CONFIG_PATH`` once;
a fresh process per action keeps every test's ZenML isolated, exactly as a user's shell would.

    setup ROOT COMPONENT_JSON   zenml init in ROOT; register the flavor, the step operator
                                component "k8s" with that configuration, the stack "s"; activate it
    runs PIPELINE               the last run of PIPELINE and its steps, as JSON
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


def operator_call(action: str, step_run_id: str) -> str:
    from zenml.client import Client

    client = Client()
    operator = client.active_stack.step_operators[COMPONENT]
    step_run = client.get_run_step(step_run_id)
    result = getattr(operator, action)(step_run)
    return str(getattr(result, "value", result))


def main(argv: list[str]) -> int:
    action, *args = argv
    if action == "setup":
        setup(*args)
        print("ok")
    elif action == "runs":
        print(json.dumps(runs(*args)))
    elif action in ("status", "wait", "cancel"):
        print(operator_call("get_status" if action == "status" else action, *args))
    else:
        raise SystemExit(f"unknown action {action!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
