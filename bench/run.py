"""Benchmarks of launch() against a live cluster; every figure is printed as JSON.

* detection latency: an independent watch in this process notes when it first sees a Job's
  terminal condition; the figure is the time from then until ``launch`` returns;
* API requests per step, read from the API server's own counters (``apiserver_request_total``)
  for the verbs and resources the operator uses, less the same counters' idle rate;
* fan-in (``bench/fanin.py``): N processes in one namespace at once (N = 1, 10, 50, 200), each
  following a step of its own: watch events and requests per step, watch connections per
  process, detection latency;
* fan-out: 5,000 steps launched at once from one process: its wall time against the Job
  controller's (first Job seen created to last Job seen finished, by an independent watch), its
  peak RSS, and the same figures;
* steps on several nodes (``ranks.py``): 8- and 32-rank steps from launch to every rank
  running, and from one rank's failure to the error and to the other ranks gone, with and
  without Kueue.

Usage: ``python bench/run.py [--quick] [--steps 50] [--fanin 1 10 50 200] [--fanout 5000]
[--long 60] [--ranks-repeat 3] [--short] [--only NAME ...]``. ``--quick`` is the short form CI
runs: fewer and shorter steps, the four fan-in rounds (about 3 minutes of it), no fan-out, and
each multi-node case once (``--ranks-repeat 1 --short``, said in the output); ``--only fanin
fanout`` runs the fan-in rounds and the 5,000-step fan-out alone (the fan-out's Jobs are made at
the Job controller's pace: about 25 minutes on the local cluster).
The machine is shared and noisy: each figure is reported with min / median / max where it is a
distribution, and repeated runs are what to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import fanin  # noqa: E402
from common import (  # noqa: E402
    JobTimes,
    NamespaceWatch,
    create_kueue_queue,
    delete_cluster_objects,
    delta,
    kubeconfig,
    kueue_installed,
    metrics_text,
    new_namespace,
    operator_config,
    request_counts,
    run_parallel,
    step_info,
    summary,
)

from k8s_step_operator import KubernetesJobStepOperator, ResourceSettings  # noqa: E402

OUR_VERBS = {
    "jobs": ("POST", "GET", "LIST", "WATCH", "DELETE"),
    "pods": ("LIST", "WATCH"),
    "events": ("LIST", "WATCH"),
    "nodes": ("LIST",),
    "nodepools": ("LIST",),
    "workloads": ("LIST", "WATCH"),
    "localqueues": ("GET",),
}


OPERATORS: list[KubernetesJobStepOperator] = []


def make_operator(namespace: str, **settings: Any) -> KubernetesJobStepOperator:
    op = KubernetesJobStepOperator("bench", config=operator_config(namespace, **settings))
    OPERATORS.append(op)
    return op


def our_requests(text: str) -> float:
    """Requests of the verbs the operator uses on each resource (pods/log apart).

    Other components use the same resources with other verbs (the kubelet GETs its node, the job
    controller creates pods and updates Job status, KWOK patches pod status); those are left out.
    """
    return sum(request_breakdown(text).values())


def request_breakdown(text: str) -> dict[str, float]:
    """``our_requests`` per "VERB resource"."""
    return request_counts(text, OUR_VERBS)


_TO_DROP: list[str] = []


def drop_namespace(admin: k8s.ApiClient, name: str) -> None:
    """Delete the namespace at the very end: deleting one makes the namespace controller list
    every resource in it, which would count as requests in the figures taken meanwhile."""
    _TO_DROP.append(name)


def drop_namespaces(admin: k8s.ApiClient, wait: bool = False) -> None:
    """Delete the namespaces of the figures taken so far; ``wait`` until they are gone."""
    core = k8s.CoreV1Api(admin)
    names, _TO_DROP[:] = list(_TO_DROP), []
    for name in names:
        try:
            core.delete_namespace(name)
        except Exception as e:  # best effort at the end
            logging.warning("could not delete namespace %s: %s", name, e)
    deadline = time.monotonic() + 300
    while wait and names and time.monotonic() < deadline:
        names = [n for n in names if n in {ns.metadata.name for ns in core.list_namespace().items}]
        time.sleep(1)


def bench_latency(
    admin: k8s.ApiClient, steps: int, width: int, stream_logs: bool = True
) -> dict[str, Any]:
    ns = new_namespace(admin, "bench-latency")
    try:
        times = JobTimes(admin, ns)
        times.ready.wait(10)
        op = make_operator(ns, stream_logs=stream_logs)
        run = f"latency-{uuid.uuid4().hex[:6]}"
        returned: dict[str, float] = {}

        def one(i: int) -> None:
            info = step_info(run, f"step-{i}", "300ms")
            name = op.build_job(info, ["true"], {})["metadata"]["name"]
            op.launch(info, ["true"], {})
            returned[name] = time.monotonic()

        errors = run_parallel(one, steps, width)
        time.sleep(0.5)
        times.stop()
        latencies = [
            (returned[n] - times.finished[n]) * 1000 for n in returned if n in times.finished
        ]
        return {
            "what": "ms from an independent watch seeing the end to launch returning",
            "concurrency": width,
            "stream_logs": stream_logs,
            "errors": [str(e) for e in errors][:3],
            "latency_ms": summary(latencies, digits=4),
        }
    finally:
        drop_namespace(admin, ns)


def bench_unschedulable(admin: k8s.ApiClient, steps: int) -> dict[str, Any]:
    """Seconds from calling launch to the error for 9 GPUs where nodes have at most 8."""
    from k8s_step_operator import UnschedulableError

    ns = new_namespace(admin, "bench-unsched")
    try:
        op = make_operator(ns)
        run = f"unsched-{uuid.uuid4().hex[:6]}"
        took: list[float] = []
        for i in range(steps):
            info = step_info(run, f"huge-{i}", "1s")
            info = info.model_copy(
                update={
                    "config": info.config.model_copy(
                        update={"resource_settings": ResourceSettings(gpu_count=9)}
                    )
                }
            )
            t0 = time.monotonic()
            try:
                op.launch(info, ["true"], {})
            except UnschedulableError as e:
                assert "Insufficient nvidia.com/gpu" in str(e), e
                took.append(time.monotonic() - t0)
        return {
            "what": "s from launch() to UnschedulableError, Job and pod deleted, 9 GPUs vs 8",
            "seconds": summary(took, digits=4),
        }
    finally:
        drop_namespace(admin, ns)


def stop_watchers() -> None:
    """Close every operator of this process (their watches end), and let the server count."""
    while OPERATORS:
        OPERATORS.pop().close()
    time.sleep(1)


def bench_requests(admin: k8s.ApiClient, duration_s: int, steps: int) -> dict[str, Any]:
    ns = new_namespace(admin, "bench-requests")
    try:
        stop_watchers()  # earlier figures' lingering watchers would be counted here otherwise
        # Wait until nothing else uses these verbs (a namespace being deleted is listed through
        # by the namespace controller), so that the figure counts the operator's requests only.
        idle_rate = -1.0
        for _ in range(10):
            before = our_requests(metrics_text(admin, reuse_pool=False))
            time.sleep(3)
            idle_rate = (our_requests(metrics_text(admin, reuse_pool=False)) - before) / 3
            if idle_rate == 0:
                break
        op = make_operator(ns)
        run = f"req-{uuid.uuid4().hex[:6]}"
        start = request_breakdown(metrics_text(admin, reuse_pool=False))
        t0 = time.monotonic()
        errors = run_parallel(
            lambda i: op.launch(step_info(run, f"s{i}", f"{duration_s}s"), ["true"], {}),
            steps,
            steps,
        )
        # A watch is counted when it ends: stop the shared watcher (instead of letting it
        # linger for the next step) so that its requests are all in the figure.
        stop_watchers()
        elapsed = time.monotonic() - t0
        end = request_breakdown(metrics_text(admin, reuse_pool=False))
        breakdown = delta(end, start)
        total = sum(breakdown.values())
        return {
            "step_seconds": duration_s,
            "steps": steps,
            "errors": [str(e) for e in errors][:3],
            "idle_rate_per_s_before": round(idle_rate, 3),
            "seconds": round(elapsed, 1),
            "requests": round(total, 1),
            "requests_per_step": round(total / steps, 2),
            "breakdown": breakdown,
        }
    finally:
        drop_namespace(admin, ns)


class QueueTimes:
    """An independent watch on a namespace's Jobs and pods: when each Job was first seen
    un-suspended (Kueue admitted it) and when its pod was first seen Running."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.admitted: dict[str, float] = {}
        self.running: dict[str, float] = {}
        batch, core = k8s.BatchV1Api(api), k8s.CoreV1Api(api)
        self._watches = [
            NamespaceWatch(batch.list_namespaced_job, namespace, self._job, bookmarks=False),
            NamespaceWatch(core.list_namespaced_pod, namespace, self._pod, bookmarks=False),
        ]

    def _job(self, etype: str, obj: dict[str, Any], now: float) -> None:
        if (obj.get("spec") or {}).get("suspend") is False:
            self.admitted.setdefault(obj["metadata"]["name"], now)

    def _pod(self, etype: str, obj: dict[str, Any], now: float) -> None:
        if (obj.get("status") or {}).get("phase") == "Running":
            job = (obj["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-name", "")
            self.running.setdefault(job, now)

    def stop(self) -> None:
        for watch in self._watches:
            watch.stop()


class _RunningSeen(logging.Handler):
    """When the operator said each step was running (monotonic), from its own log line."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.at: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "k8sso_phase", None) == "running":
            step = str(record.args[0]) if isinstance(record.args, tuple) and record.args else ""
            self.at.setdefault(step, time.monotonic())


def bench_kueue(admin: k8s.ApiClient, steps: int, gpus: int, duration: str) -> dict[str, Any]:
    """``steps`` 1-GPU steps at once through Kueue, against a ClusterQueue of ``gpus`` GPUs."""
    if not kueue_installed(admin):
        return {"skipped": "Kueue is not installed in this cluster"}
    ns = new_namespace(admin, "bench-kueue")
    tag = ns.removeprefix("bench-kueue-")
    cluster_objects = create_kueue_queue(
        admin,
        ns,
        flavor=f"bench-h100-{tag}",
        cluster_queue=f"bench-{tag}",
        gpus=gpus,
        node_labels={"k8s-step-operator.io/pool": "h100"},
    )
    seen = _RunningSeen()
    operator_log = logging.getLogger("k8s_step_operator")
    level, propagate = operator_log.level, operator_log.propagate
    operator_log.addHandler(seen)
    operator_log.setLevel(logging.INFO)  # the phase lines, for their times; not printed
    operator_log.propagate = False
    times = QueueTimes(admin, ns)
    try:
        stop_watchers()
        time.sleep(2)
        op = make_operator(ns, queue_name="gpu", stream_logs=False)
        run = f"queue-{uuid.uuid4().hex[:6]}"
        names: dict[str, str] = {}

        def one(i: int) -> None:
            info = step_info(run, f"q{i}", duration)
            info = info.model_copy(
                update={
                    "config": info.config.model_copy(
                        update={"resource_settings": ResourceSettings(gpu_count=1)}
                    )
                }
            )
            names[f"q{i}"] = op.build_job(info, ["true"], {})["metadata"]["name"]
            op.launch(info, ["true"], {})

        start = request_breakdown(metrics_text(admin, reuse_pool=False))
        t0 = time.monotonic()
        errors = run_parallel(one, steps, steps)
        wall = time.monotonic() - t0
        stop_watchers()
        end = request_breakdown(metrics_text(admin, reuse_pool=False))
        breakdown = delta(end, start)
        to_running = [
            times.running[job] - times.admitted[job]
            for job in names.values()
            if job in times.running and job in times.admitted
        ]
        our_lag = [
            (seen.at[step] - times.running[job]) * 1000
            for step, job in names.items()
            if step in seen.at and job in times.running
        ]
        ours = [
            seen.at[step] - times.admitted[job]
            for step, job in names.items()
            if step in seen.at and job in times.admitted
        ]
        return {
            "what": f"{steps} steps of 1 GPU at once, ClusterQueue quota {gpus} GPUs, one process",
            "steps": steps,
            "completed": steps - len(errors),
            "errors": [str(e)[:300] for e in errors[:3]],
            "wall_s": round(wall, 1),
            "requests_per_step": round(sum(breakdown.values()) / steps, 2),
            "breakdown": breakdown,
            "admission_to_pod_running_s": {
                "job_controller": summary(to_running, digits=4),
                "operator_reports_running": summary(ours, digits=4),
            },
            "operator_lag_behind_pod_running_ms": summary(our_lag, digits=4),
        }
    finally:
        times.stop()
        operator_log.removeHandler(seen)
        operator_log.setLevel(level)
        operator_log.propagate = propagate
        delete_cluster_objects(admin, cluster_objects)
        drop_namespace(admin, ns)


def timed(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fn``'s figures with the seconds the whole of it took (``round_s``: setup, the run and
    the namespace's deletion), what the round costs a CI run."""
    t0 = time.monotonic()
    figures = fn(*args)
    figures["round_s"] = round(time.monotonic() - t0, 1)
    return figures


def main(argv: Iterable[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the short form (CI): fewer, smaller")
    p.add_argument("--steps", type=int, default=50, help="steps for the latency figure")
    p.add_argument("--width", type=int, default=5, help="steps at once for the latency figure")
    p.add_argument(
        "--fanin", type=int, nargs="*", default=[1, 10, 50, 200], help="processes of each round"
    )
    p.add_argument(
        "--fanout", type=int, default=5000, help="steps at once from one process (0: none)"
    )
    p.add_argument("--fanout-duration", default="5s", help="how long each fan-in/out step runs")
    p.add_argument("--long", type=int, default=60, help="seconds of the long step")
    p.add_argument("--queued", type=int, default=100, help="steps for the Kueue figure")
    p.add_argument("--ranks-repeat", type=int, default=3, help="runs of each multi-node case")
    p.add_argument(
        "--short", action="store_true", help="CI's short form (fewer runs), said in the output"
    )
    p.add_argument(
        "--only",
        nargs="*",
        default=["latency", "unschedulable", "requests", "kueue", "fanin", "fanout", "ranks"],
    )
    opts = p.parse_args(args)
    if opts.quick:
        opts.steps, opts.long, opts.queued = 20, 10, 24
        opts.fanin, opts.fanout = [1, 10, 50, 200], 0
    logging.basicConfig(level=logging.WARNING)
    admin = k8s_config.new_client_from_config(config_file=kubeconfig())
    results: dict[str, Any] = {"cpus": os.cpu_count()}
    # Seconds each part took, setup and clean-up included: what it costs a CI run.
    spent: dict[str, float] = {}
    results["part_seconds"] = spent

    @contextlib.contextmanager
    def part(name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            spent[name] = round(time.monotonic() - t0, 1)
            print(f"[bench] {name}: {spent[name]} s", file=sys.stderr, flush=True)

    if "latency" in opts.only:
        with part("latency"):
            results["detection_latency"] = bench_latency(admin, opts.steps, 1)
            results["detection_latency_concurrent"] = bench_latency(admin, opts.steps, opts.width)
    if "latency-nologs" in opts.only:
        with part("latency-nologs"):
            results["detection_latency_no_logs"] = bench_latency(
                admin, opts.steps, opts.width, stream_logs=False
            )
    if "unschedulable" in opts.only:
        with part("unschedulable"):
            results["unschedulable"] = bench_unschedulable(admin, 3 if opts.quick else 10)
    if "requests" in opts.only:
        with part("requests"):
            results["requests_1s_alone"] = bench_requests(admin, 1, 1)
            results["requests_long_alone"] = bench_requests(admin, opts.long, 1)
            results["requests_1s_x5"] = bench_requests(admin, 1, 5)
            results["requests_long_x5"] = bench_requests(admin, opts.long, 5)
    if "kueue" in opts.only:
        with part("kueue"):
            results["kueue"] = bench_kueue(admin, opts.queued, 8, "2s")
    if {"fanin", "fanout"} & set(opts.only):
        with part("namespaces dropped, fan-in nodes added"):
            stop_watchers()
            drop_namespaces(admin, wait=True)  # their deletion would count in the figures below
            fanin.add_nodes()
    if "fanin" in opts.only:
        with part("fanin"):
            results["fanin"] = [
                timed(fanin.fanin_round, admin, n, 1, opts.fanout_duration) for n in opts.fanin
            ]
    if "fanout" in opts.only and opts.fanout:
        with part("fanout"):
            results["fanout"] = timed(
                fanin.fanin_round, admin, 1, opts.fanout, opts.fanout_duration
            )
    if "ranks" in opts.only:
        from ranks import bench_ranks  # bench/ranks.py, beside this script

        with part("ranks"):
            repeat = 1 if opts.quick else opts.ranks_repeat
            results["ranks"] = bench_ranks(admin, [8, 32], repeat, opts.short or opts.quick)
    drop_namespaces(admin)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
