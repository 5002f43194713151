"""Our step operator against ZenML's own, on the production ZenML stack; figures as JSON.

One stack (ZenML's kubernetes orchestrator, S3, the ZenML server of ``make stack-services``, the
chart's accounts), two step operators: ours (``kubernetes_job``) and ZenML's ``kubernetes``, each
in a stack that differs only in it. The same pipeline (``zenml_server_pipeline.py``: two
one-second steps through the step operator) runs on both, interleaved, ``--runs`` times each.

For every step run through a step operator, from ZenML's step pod (the image's launcher trace,
``e2e/images/zenml_trace.py``) and an independent watch on the namespace's Jobs in this process
(every pod shares this machine's clock):

* ``wall_seconds``: from ZenML's launcher calling the step operator to its ``wait`` returning;
* ``job_seconds``: the step's Job, from first seen to its terminal condition (the watch);
* ``added_seconds``: wall less job: what the step operator adds to its Job's own duration;
* ``detection_seconds``: from the Job's terminal condition (the watch) to ``wait`` returning:
  when ZenML sees the step's end;
* ``api_requests``: Kubernetes API requests of the launcher's process from the call to the
  return (ours: its Job, the companion Secret, the shared watches; ZenML's: its Job and every
  status poll).

Target: ours adds at most 100 ms over its Job's own duration, where ZenML's (polling after 1, 2,
4, 8, then every 16 s) adds seconds. Needs what ``make demo-zenml-server`` needs. Usage:
``python bench/zenml_server_bench.py [--runs 2]``. The machine is shared and noisy: compare
repeated runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import JobTimes, kubeconfig, summary, temporary_namespace  # noqa: E402

from examples.zenml import server_stack  # noqa: E402

PIPELINE = Path(__file__).with_name("zenml_server_pipeline.py")
TRACE = "K8SSO-TRACE "
STEP_RUN_ANNOTATION = "k8s-step-operator.io/step-run-id"


class JobWatch(JobTimes):
    """When each Job of the namespace was first seen and seen terminal (wall clock, as the step
    pods' traces are), and which Job runs each step run."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.step_run: dict[str, str] = {}
        super().__init__(api, namespace, clock=time.time)

    def _seen(self, etype: str, obj: dict[str, Any], now: float) -> None:
        super()._seen(etype, obj, now)
        if etype not in ("ADDED", "MODIFIED"):
            return
        meta = obj["metadata"]
        # Ours names the step run in an annotation, ZenML's in a label.
        run = (meta.get("annotations") or {}).get(STEP_RUN_ANNOTATION) or (
            meta.get("labels") or {}
        ).get("step_run_id")
        if run:
            self.step_run[run] = meta["name"]


def traces(core: k8s.CoreV1Api, namespace: str, run_id: str) -> list[dict[str, Any]]:
    """The launcher trace lines of a run's ZenML step pods."""
    found: list[dict[str, Any]] = []
    for pod in core.list_namespaced_pod(namespace, label_selector=f"run_id={run_id}").items:
        with contextlib.suppress(k8s.ApiException):
            text = core.read_namespaced_pod_log(pod.metadata.name, namespace)
            found += [
                json.loads(line.split(TRACE, 1)[1]) for line in text.splitlines() if TRACE in line
            ]
    return found


def stats(values: list[float]) -> dict[str, float] | None:
    """n / min / p50 / max; None (null in the JSON) for no values."""
    return summary(values, p99=False) or None


@contextlib.contextmanager
def chart(ns: str, config: str) -> Iterator[str]:
    """The chart in ``ns``, its pipeline account allowed to run ZenML's orchestrator; its
    cluster-scoped objects are named after the release, which is uninstalled at the end."""
    release = ns
    common = ["-n", ns, "--kubeconfig", config]
    subprocess.run(
        [helm(), "install", release, str(ROOT / "charts" / "k8s-step-operator"), *common,
         "--set", "pipeline.rbac.zenmlOrchestrator=true"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield release
    finally:
        subprocess.run([helm(), "uninstall", release, *common], check=False, capture_output=True)


def helm() -> str:
    versions = dict(
        line.split("=", 1)
        for line in (ROOT / "e2e" / "build" / "versions.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    cache = Path(os.environ.get("K8SSO_CACHE", str(Path.home() / ".cache" / "k8s-step-operator")))
    return str(cache / "bin" / f"helm-{versions['HELM_VERSION'].strip()}" / "helm")


def zenml(env: dict[str, str], cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "zenml"), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0 and not server_stack.already_there(args, done):
        raise SystemExit(f"zenml {' '.join(args[:3])} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


LAST_RUN = """
from zenml.client import Client
print(Client().get_pipeline("two_sleeps").last_run.id)
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--runs", type=int, default=2, help="runs of the pipeline per step operator")
    opts = p.parse_args(argv)
    config = kubeconfig()
    api = k8s_config.new_client_from_config(config_file=config)
    core = k8s.CoreV1Api(api)
    services = server_stack.local_services(config, ROOT / ".cluster" / "stack" / "stack.json")
    context = str(yaml.safe_load(Path(config).read_text())["current-context"])
    per: dict[str, list[dict[str, float]]] = {"ours": [], "zenml": []}
    runs: dict[str, list[float]] = {"ours": [], "zenml": []}
    with (
        tempfile.TemporaryDirectory(prefix="zenml-prod-bench-") as tmp,
        # ZenML's own pods run as root: the baseline profile.
        temporary_namespace(
            api, "bench-zenml-prod", {"pod-security.kubernetes.io/enforce": "baseline"}
        ) as ns,
        chart(ns, config) as release,
    ):
        repo = Path(tmp) / "repo"
        repo.mkdir()
        shutil.copy(PIPELINE, repo / PIPELINE.name)
        env = server_stack.client_env(services, Path(tmp) / "config")
        env["KUBECONFIG"] = config
        zenml(env, repo, "init")
        tag = uuid.uuid4().hex[:6]
        spec = server_stack.local_spec(
            ns,
            pipeline_account=f"{release}-k8s-step-operator-pipeline",
            step_account=f"{release}-k8s-step-operator-step",
            kube_context=context,
            prefix=f"bench/{tag}",
            stack=f"bench-{tag}",
        )
        for args in server_stack.registration(services, spec):
            zenml(env, repo, *args)
        theirs, commands = server_stack.zenmls_operator(spec)
        for args in commands:
            zenml(env, repo, *args)
        # ZenML's operator reads its placement from the component's pod settings.
        zenml(
            env, repo, "step-operator", "update", spec.name("zenml-k8s"),
            "--pod_settings=" + json.dumps(server_stack.real_node_pod_settings()),
        )  # fmt: skip
        watch = JobWatch(api, ns)
        watch.ready.wait(30)
        stacks = {"ours": spec.stack, "zenml": theirs}
        # A first run on each warms the node (image layers, Python's caches): not counted.
        for which in [*stacks, *(w for _ in range(opts.runs) for w in stacks)]:
            zenml(env, repo, "stack", "set", stacks[which])
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, PIPELINE.name], env=env, cwd=repo, capture_output=True,
                text=True, timeout=900, check=False,
            )  # fmt: skip
            elapsed = time.monotonic() - started
            if done.returncode != 0:
                raise SystemExit(f"the pipeline failed on {which}:\n{done.stdout[-4000:]}")
            run_id = subprocess.run(
                [sys.executable, "-c", LAST_RUN], env=env, cwd=repo, capture_output=True,
                text=True, check=True,
            ).stdout.strip().splitlines()[-1]  # fmt: skip
            if len(runs[which]) < opts.runs + 1:
                runs[which].append(elapsed)
            time.sleep(1)  # the watch's last events
            for record in traces(core, ns, run_id):
                job = watch.step_run.get(record["step_run_id"])
                if job is None or job not in watch.finished:
                    continue
                per[which].append(
                    {
                        "wall": record["returned_at"] - record["submit_at"],
                        "job": watch.finished[job] - watch.created[job],
                        "detection": record["returned_at"] - watch.finished[job],
                        "requests": float(record["requests"]),
                    }
                )
        watch.stop()
    results: dict[str, Any] = {"cpus": os.cpu_count(), "runs_per_operator": opts.runs}
    for which, label in (("ours", "kubernetes_job"), ("zenml", "zenml_kubernetes")):
        # The warm-up run's two steps are dropped.
        steps = per[which][2:]
        results[label] = {
            "pipeline_seconds": stats(runs[which][1:]),
            "wall_seconds": stats([s["wall"] for s in steps]),
            "job_seconds": stats([s["job"] for s in steps]),
            "added_seconds": stats([s["wall"] - s["job"] for s in steps]),
            "detection_seconds": stats([s["detection"] for s in steps]),
            "api_requests": stats([s["requests"] for s in steps]),
        }
    ours = results["kubernetes_job"]["added_seconds"]
    results["ours_adds_at_most_100ms"] = bool(ours and ours["max"] <= 0.1)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
