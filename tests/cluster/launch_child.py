"""A caller process for tests that interrupt or kill it: launches one step and reports.

Usage: ``python launch_child.py KUBECONFIG NAMESPACE RUN_ID STEP DURATION [STEP_ACCOUNT]``.
Exits 0 on success, 1 on a step error, and as the signal dictates when interrupted.
``$K8SSO_CHILD_SETTINGS`` (JSON) adds step settings (``num_nodes``, ``gpu_count``...).
"""

from __future__ import annotations

import json
import logging
import os
import sys

from k8s_step_operator import (
    KubernetesJobStepOperator,
    KubernetesJobStepOperatorConfig,
    StepConfiguration,
    StepError,
    StepRunInfo,
)


def main(argv: list[str]) -> int:
    kubeconfig, namespace, run_id, step, duration = argv[:5]
    account = argv[5] if len(argv) > 5 else None
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    config = KubernetesJobStepOperatorConfig(
        kubeconfig_path=kubeconfig,
        namespace=namespace,
        image="localhost/step:1",
        image_pull_policy="IfNotPresent",
        service_account_name=account,
    )
    info = StepRunInfo(
        step_run_id=f"{run_id}-{step}",
        run_id=run_id,
        pipeline_step_name=step,
        config=StepConfiguration(
            name=step,
            settings={
                "step_operator.kubernetes_job": {
                    "pod_annotations": {"sim.k8s-step-operator.io/run-duration": duration},
                    **json.loads(os.environ.get("K8SSO_CHILD_SETTINGS") or "{}"),
                }
            },
        ),
    )
    try:
        KubernetesJobStepOperator("child", config=config).launch(info, ["sleep", "3600"], {})
    except StepError as e:
        print(f"STEP ERROR {type(e).__name__}: {e}", flush=True)
        return 1
    print("STEP DONE", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
