"""Benchmarks of the ZenML flavor under real ZenML on the local cluster; figures printed as JSON.

* overhead per step: the time the call of a three-step pipeline whose steps sleep 1 s takes on
  the step operator (each step a Job on the real node), less the same pipeline run by ZenML's
  local orchestrator in its own process (no step operator), divided by three. It is what a
  step costs for being a Job: scheduling, the container's start, Python and ZenML starting in
  it, ZenML's code download, and the detection below;
* detection: an independent watch in this process notes when it first sees each Job's
  terminal condition; the figure is the time from then until the step operator's ``wait``
  returned in the pipeline's process (both read the system's monotonic clock). The same with
  ZenML's default ``wait`` (polling our ``get_status`` after 1, 2, 4, 8, then every 16 s) is
  the reference.

Setup, once: a namespace, ZenML in local mode in a temporary directory (SQLite store, local
artifact store on a local PersistentVolume of the real node), the flavor, the component and the
stack, as ``make demo-zenml`` does. Needs the real node and the ZenML step image (``make
zenml-image``). Usage: ``python bench/zenml_bench.py [--runs 3] [--baseline-runs 2]
[--poll-runs 1]``. The machine is shared and noisy: compare repeated runs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import JobTimes, kubeconfig, summary, temporary_namespace  # noqa: E402

PIPELINE = Path(__file__).with_name("zenml_pipeline.py")
REAL_LABEL = "k8s-step-operator.io/real-node"
REAL_NODE = "real-node-0"
FLAVOR = "k8s_step_operator.integrations.zenml.flavor.KubernetesJobStepOperatorFlavor"


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@contextlib.contextmanager
def stores_claim(core: k8s.CoreV1Api, ns: str, path: Path) -> Iterator[str]:
    cluster = load("k8sso_e2e_cluster", ROOT / "e2e" / "cluster.py")
    pv = f"{ns}-stores"
    cluster.create_local_pv(cluster.State.load(), pv, str(path), REAL_NODE, size="1Gi")
    try:
        core.create_namespaced_persistent_volume_claim(
            ns,
            {
                "metadata": {"name": "zenml-stores"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "local-storage",
                    "volumeName": pv,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
        yield "zenml-stores"
    finally:
        with contextlib.suppress(k8s.ApiException):
            core.delete_namespaced_persistent_volume_claim("zenml-stores", ns)
        with contextlib.suppress(k8s.ApiException):
            core.delete_persistent_volume(pv)


class ZenML:
    """One ZenML in local mode, in a directory of its own."""

    def __init__(self, root: Path) -> None:
        self.config = root / "config"
        self.repo = root / "repo"
        self.repo.mkdir(parents=True)
        shutil.copy(PIPELINE, self.repo / PIPELINE.name)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ZENML_")}
        self.env.update(
            ZENML_CONFIG_PATH=str(self.config),
            ZENML_ANALYTICS_OPT_IN="false",
            ZENML_LOGGING_COLORS_DISABLED="true",
            ZENML_ENABLE_RICH_TRACEBACK="false",
        )

    def setup(self, component: dict[str, Any]) -> None:
        code = f"""
import json
from pathlib import Path
from zenml.client import Client
from zenml.enums import StackComponentType as T
Client.initialize(root=Path({str(self.repo)!r}))
c = Client()
c.create_flavor(source={FLAVOR!r}, component_type=T.STEP_OPERATOR)
c.create_stack_component(name="k8s", flavor="kubernetes_job", component_type=T.STEP_OPERATOR,
                         configuration=json.loads({json.dumps(component)!r}))
c.create_stack(name="s", components={{T.ORCHESTRATOR: "default", T.ARTIFACT_STORE: "default",
                                      T.STEP_OPERATOR: "k8s"}})
c.activate_stack("s")
"""
        subprocess.run(
            [sys.executable, "-c", code], cwd=self.repo, env=self.env, check=True, timeout=300
        )

    def run(self, **env: str) -> float:
        done = subprocess.run(
            [sys.executable, PIPELINE.name],
            cwd=self.repo,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"the pipeline failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return float(json.loads(done.stdout.strip().splitlines()[-1])["pipeline_seconds"])


def detections(log: Path, jobs: Any) -> list[float]:
    """Seconds from each Job's terminal condition (as the watch saw it) to ``wait`` returning."""
    seen: list[float] = []
    deadline = time.monotonic() + 10
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        while entry["job"] not in jobs.finished and time.monotonic() < deadline:
            time.sleep(0.05)
        if entry["job"] in jobs.finished:
            seen.append(entry["returned"] - jobs.finished[entry["job"]])
    return seen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="runs on the step operator")
    p.add_argument("--baseline-runs", type=int, default=2, help="runs with no step operator")
    p.add_argument("--poll-runs", type=int, default=1, help="runs with ZenML's default wait")
    opts = p.parse_args(argv)
    api = k8s_config.new_client_from_config(config_file=kubeconfig())
    core = k8s.CoreV1Api(api)
    results: dict[str, Any] = {"cpus": os.cpu_count()}
    with (
        tempfile.TemporaryDirectory(prefix="zenml-bench-") as tmp,
        temporary_namespace(api, "bench-zenml") as ns,
    ):
        zenml = ZenML(Path(tmp))
        component: dict[str, Any] = {
            "kubeconfig_path": kubeconfig(),
            "namespace": ns,
            "local": True,
            "local_stores_claim": "zenml-stores",
            "image_pull_policy": "IfNotPresent",
            "node_selector": {REAL_LABEL: "true"},
            "tolerations": [
                {"key": REAL_LABEL, "operator": "Exists", "effect": "NoSchedule"},
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            ],
        }
        if os.getuid() == 0:
            component["pod_security_profile"] = "none"
        zenml.setup(component)
        with stores_claim(core, ns, zenml.config / "local_stores"):
            jobs = JobTimes(api, ns)
            jobs.ready.wait(30)
            # Warm-up: the first pod binds the claim and the node caches the image's layers.
            zenml.run(BENCH_STEP_OPERATOR="1")
            baseline = [zenml.run(BENCH_STEP_OPERATOR="0") for _ in range(opts.baseline_runs)]
            ours: list[float] = []
            ours_log = Path(tmp) / "ours.jsonl"
            for _ in range(opts.runs):
                ours.append(zenml.run(BENCH_WAIT_LOG=str(ours_log), BENCH_WAIT="ours"))
            poll_log = Path(tmp) / "poll.jsonl"
            polled = [
                zenml.run(BENCH_WAIT_LOG=str(poll_log), BENCH_WAIT="poll")
                for _ in range(opts.poll_runs)
            ]
            ours_detect = detections(ours_log, jobs)
            poll_detect = detections(poll_log, jobs) if opts.poll_runs else []
            jobs.stop()
    overhead = (statistics.median(ours) - statistics.median(baseline)) / 3
    results["zenml_three_step_pipeline_seconds"] = {
        "step_operator": summary(ours, digits=4),
        "no_step_operator": summary(baseline, digits=4),
        "zenml_default_wait": summary(polled, digits=4) if polled else None,
    }
    results["zenml_overhead_per_step_seconds"] = round(overhead, 3)
    results["zenml_detection_seconds"] = summary(ours_detect, digits=4)
    if poll_detect:
        results["zenml_default_poll_detection_seconds"] = summary(poll_detect, digits=4)
    results["zenml_detection_p99_under_100ms"] = results["zenml_detection_seconds"]["p99"] < 0.1
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
