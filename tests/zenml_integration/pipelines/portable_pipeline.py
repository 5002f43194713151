"""A pipeline written for ZenML's own ``kubernetes`` step operator, with its settings objects.

``python portable_pipeline.py`` runs it on whatever stack is active: the production test runs it
once on a stack with ZenML's step operator and once on the same stack with ours (only the
component changed), then compares the two Jobs. The settings use the shortcut key
``step_operator``, which names the stack's step operator whatever its flavor.
``STEP_ACCOUNT`` names the ServiceAccount the step runs as.
"""

from __future__ import annotations

import os
from pathlib import Path

from zenml import pipeline, step
from zenml.config import DockerSettings
from zenml.integrations.kubernetes.flavors import KubernetesStepOperatorSettings
from zenml.integrations.kubernetes.pod_settings import KubernetesPodSettings

IMAGE = os.environ.get("ZENML_STEP_IMAGE", "localhost/k8s-step-operator-zenml:dev")
REAL_LABEL = "k8s-step-operator.io/real-node"

SETTINGS = KubernetesStepOperatorSettings(
    pod_settings=KubernetesPodSettings(
        node_selectors={REAL_LABEL: "true"},
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}
                            ]
                        }
                    ]
                }
            }
        },
        tolerations=[
            {"key": REAL_LABEL, "operator": "Exists", "effect": "NoSchedule"},
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        ],
        resources={
            "requests": {"cpu": "250m", "memory": "512Mi"},
            "limits": {"memory": "512Mi"},
        },
        labels={"team": "ml"},
        annotations={"owner": "ml-platform"},
        volumes=[{"name": "scratch", "emptyDir": {}}],
        volume_mounts=[{"name": "scratch", "mountPath": "/scratch"}],
        env=[{"name": "EPOCHS", "value": "3"}],
    ),
    service_account_name=os.environ.get("STEP_ACCOUNT", "default"),
    ttl_seconds_after_finished=600,
    active_deadline_seconds=900,
)


@step(step_operator=True, settings={"step_operator": SETTINGS})
def train() -> int:
    epochs = int(os.environ["EPOCHS"])
    (Path("/scratch") / "checkpoint").write_text(f"{epochs} epochs\n")
    print(f"trained for {epochs} epochs on {os.uname().nodename}", flush=True)
    return epochs


@pipeline(settings={"docker": DockerSettings(parent_image=IMAGE, skip_build=True)})
def portable() -> None:
    train()


if __name__ == "__main__":
    portable.with_options(enable_cache=False)()
