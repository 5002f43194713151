"""Benchmarks of steps on several nodes (``num_nodes``) on simulated 8-GPU nodes; JSON figures.

For 8- and 32-rank steps, with and without Kueue (a ClusterQueue with quota for all of them):

* ``start``: from ``launch`` being called to every rank running, as an independent watch on the
  namespace's pods sees it (the Job's creation, the Service, Kueue's admission, the Job
  controller creating N pods, the scheduler placing them, the simulated kubelet starting them);
* ``failure``: one rank (the middle one) exits 3 five seconds in while the others would run ten
  minutes. From the moment the independent watch first sees that rank's pod Failed:
  ``to_error_s`` until ``launch`` raised the error naming the rank, ``to_others_stopped_s``
  until no other rank is running, and ``to_others_gone_s`` until the last other rank's pod is
  deleted (the Job controller deletes them; the failed rank's pod stays, holding no GPU, until
  the Job's TTL). ``termination_grace_s`` is the pods' grace period: the target is every other
  pod gone within it, and the error within 1 s.

The ranks run on ``bench/gang-nodes.yaml`` (32 nodes of 8 GPUs, added to the cluster first).
``python bench/ranks.py [--repeat 3] [--ranks 8 32]``, or ``bench/run.py --only ranks``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402
    SETTINGS_KEY,
    NamespaceWatch,
    add_simulated_nodes,
    create_kueue_queue,
    delete_cluster_objects,
    kubeconfig,
    kueue_installed,
    new_namespace,
    operator_config,
    summary,
)

from k8s_step_operator import (  # noqa: E402
    KubernetesJobStepOperator,
    ResourceSettings,
    StepConfiguration,
    StepFailedError,
    StepRunInfo,
)

SIM = "sim.k8s-step-operator.io/"
INDEX = "batch.kubernetes.io/job-completion-index"
POOL = {"k8s-step-operator.io/pool": "bench-gpu"}
GRACE_S = 30  # Kubernetes' default terminationGracePeriodSeconds, which the step pods keep


class PodTimes(NamespaceWatch):
    """An independent watch on a namespace's pods: when each rank first ran, failed, was gone."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.running: dict[str, float] = {}
        self.failed: dict[str, float] = {}
        self.stopped: dict[str, float] = {}
        self.gone: dict[str, float] = {}
        self.rank: dict[str, int] = {}
        super().__init__(k8s.CoreV1Api(api).list_namespaced_pod, namespace, self._seen)

    def _seen(self, etype: str, pod: dict[str, Any], now: float) -> None:
        if etype == "BOOKMARK":
            return
        name = pod["metadata"]["name"]
        self.rank.setdefault(name, int(pod["metadata"].get("annotations", {}).get(INDEX, -1)))
        phase = pod.get("status", {}).get("phase")
        if etype == "DELETED":
            self.gone.setdefault(name, now)
            self.stopped.setdefault(name, now)
            return
        if phase == "Running":
            self.running.setdefault(name, now)
        if phase in ("Failed", "Succeeded"):
            self.stopped.setdefault(name, now)
            if phase == "Failed":
                self.failed.setdefault(name, now)


def step(run: str, name: str, ranks: int, **sim: str) -> StepRunInfo:
    return StepRunInfo(
        step_run_id=str(uuid.uuid4()),
        run_id=run,
        run_name=run,
        pipeline_step_name=name,
        config=StepConfiguration(
            name=name,
            resource_settings=ResourceSettings(gpu_count=8),
            settings={
                SETTINGS_KEY: {
                    "num_nodes": ranks,
                    "node_selector": POOL,
                    "pod_annotations": {f"{SIM}{k.replace('_', '-')}": v for k, v in sim.items()},
                }
            },
        ),
    )


def kueue_queue(admin: k8s.ApiClient, namespace: str, gpus: int) -> list[tuple[str, str]]:
    """A flavor for the bench pool, a ClusterQueue of ``gpus`` GPUs for ``namespace``, LocalQueue
    ``gpu``; returns the cluster-scoped objects to delete afterwards."""
    tag = namespace.rsplit("-", 1)[-1]
    return create_kueue_queue(
        admin,
        namespace,
        flavor=f"bench-gpu-{tag}",
        cluster_queue=f"bench-ranks-{tag}",
        gpus=gpus,
        node_labels=POOL,
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    )


def others(times: PodTimes, job: str, bad: int) -> list[str]:
    """The pods of the Job's ranks other than ``bad`` that the watch has seen."""
    return [n for n, r in times.rank.items() if n.startswith(f"{job}-") and r != bad]


def bench_gang(
    admin: k8s.ApiClient, ns: str, times: PodTimes, ranks: int, kueue: bool, repeat: int
) -> dict[str, Any]:
    """``repeat`` starts and failures of a step of ``ranks`` ranks in ``ns`` (through its
    LocalQueue ``gpu`` with ``kueue``), timed by ``times``, the watch on that namespace."""
    settings: dict[str, Any] = {"queue_name": "gpu"} if kueue else {}
    operator = KubernetesJobStepOperator("bench", config=operator_config(ns, **settings))
    run = f"ranks-{ranks}{'-kueue' if kueue else ''}-{uuid.uuid4().hex[:6]}"
    start_s: list[float] = []
    to_error: list[float] = []
    to_stopped: list[float] = []
    to_gone: list[float] = []
    errors: list[str] = []
    try:
        for i in range(repeat):
            # Start: every rank running. The step then runs 1 s and succeeds.
            info = step(run, f"start-{i}", ranks, run_duration="1s")
            job = operator.build_job(info, ["torchrun", "train.py"], {})["metadata"]["name"]
            called = time.monotonic()
            operator.launch(info, ["torchrun", "train.py"], {})
            mine = [t for n, t in times.running.items() if n.startswith(f"{job}-")]
            if len(mine) == ranks:
                start_s.append(max(mine) - called)
            else:
                errors.append(f"start-{i}: saw {len(mine)} of {ranks} ranks running")

            # Failure: the middle rank exits 3 after 5 s; the others would run ten minutes.
            bad = ranks // 2
            info = step(
                run,
                f"fail-{i}",
                ranks,
                run_duration="10m",
                **{f"run_duration.rank-{bad}": "5s", f"exit_code.rank-{bad}": "3"},
            )
            job = operator.build_job(info, ["torchrun", "train.py"], {})["metadata"]["name"]
            try:
                operator.launch(info, ["torchrun", "train.py"], {})
                errors.append(f"fail-{i}: the step succeeded")
                continue
            except StepFailedError as e:
                raised = time.monotonic()
                if e.rank != bad or e.exit_code != 3:
                    errors.append(f"fail-{i}: reported rank {e.rank} exit {e.exit_code}")
            deadline = time.monotonic() + GRACE_S + 30
            while time.monotonic() < deadline:
                rest = others(times, job, bad)
                if rest and all(n in times.gone for n in rest):
                    break
                time.sleep(0.05)
            failed = [
                t
                for n, t in times.failed.items()
                if times.rank.get(n) == bad and n.startswith(f"{job}-")
            ]
            if not failed:
                errors.append(f"fail-{i}: the failed rank was not seen failing")
                continue
            t_fail = min(failed)
            to_error.append(raised - t_fail)
            rest = others(times, job, bad)
            if rest and all(n in times.stopped for n in rest):
                to_stopped.append(max(times.stopped[n] for n in rest) - t_fail)
            if rest and all(n in times.gone for n in rest):
                to_gone.append(max(times.gone[n] for n in rest) - t_fail)
            else:
                errors.append(f"fail-{i}: other ranks still there after {GRACE_S + 30}s")
    finally:
        operator.close()
    return {
        "ranks": ranks,
        "kueue": kueue,
        "gpus_per_rank": 8,
        "start_to_all_ranks_running_s": summary(start_s, p99=False),
        "failure": {
            "to_error_s": summary(to_error, p99=False),
            "to_others_stopped_s": summary(to_stopped, p99=False),
            "to_others_gone_s": summary(to_gone, p99=False),
            "termination_grace_s": GRACE_S,
        },
        "targets_met": {
            "error_within_1s": bool(to_error) and max(to_error) <= 1.0,
            "others_gone_within_grace": bool(to_gone)
            and len(to_gone) == repeat
            and max(to_gone) <= GRACE_S,
        },
        "errors": errors[:5],
    }


def bench_ranks(
    admin: k8s.ApiClient, sizes: list[int], repeat: int, short: bool = False
) -> dict[str, Any]:
    """Every size with and without Kueue (when installed), ``repeat`` times each, in one
    namespace whose ClusterQueue holds the largest gang; ``short`` says the run is CI's."""
    add_simulated_nodes("gang-nodes.yaml")
    with_kueue = [False, True] if kueue_installed(admin) else [False]
    results: dict[str, Any] = {
        "form": (
            f"short (CI): {repeat} run(s) of each case; `make bench` outside CI runs 3"
            if short
            else f"{repeat} run(s) of each case"
        ),
        "failed_rank_pod": "kept, terminated (holding no GPU), with the Job until its TTL "
        "(ttl_seconds_after_finished) for its logs: 'others' are every other rank's pods",
    }
    # The figures are wall times on a shared machine: how busy it was goes with them.
    results["load_average_1m"] = {"before": round(os.getloadavg()[0], 2)}
    ns = new_namespace(admin, "bench-ranks")
    times = PodTimes(admin, ns)
    times.ready.wait(10)
    cluster_objects: list[tuple[str, str]] = []
    try:
        if len(with_kueue) == 2:
            cluster_objects = kueue_queue(admin, ns, max(sizes) * 8)
        for ranks in sizes:
            for kueue in with_kueue:
                key = f"{ranks}_ranks{'_kueue' if kueue else ''}"
                results[key] = bench_gang(admin, ns, times, ranks, kueue, repeat)
    finally:
        times.stop()
        delete_cluster_objects(admin, cluster_objects)
        k8s.CoreV1Api(admin).delete_namespace(ns)
    results["load_average_1m"]["after"] = round(os.getloadavg()[0], 2)
    if len(with_kueue) == 1:
        results["kueue"] = "skipped: Kueue is not installed in this cluster"
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, nargs="*", default=[8, 32])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--short", action="store_true", help="say in the output that this is CI's run")
    opts = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    admin = k8s_config.new_client_from_config(config_file=kubeconfig())
    print(json.dumps(bench_ranks(admin, opts.ranks, opts.repeat, opts.short), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
