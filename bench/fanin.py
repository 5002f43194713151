"""Many pipelines in one namespace: what each step costs the API server as other pipelines run.

In production every running pipeline launches its steps from a process of its own (under ZenML's
Kubernetes orchestrator, from each step's own pod), all in one namespace. This benchmark runs N
such processes at once, each following its own steps, and prints what a step costs:

* watch events per step: the events the API server sent to every watcher of Jobs, pods, events
  and Kueue's Workloads (``apiserver_watch_events_total``; the Job controller's, the scheduler's
  and KWOK's included, the bench's own Job watch left out), divided by the steps;
* requests per step: the API server's ``apiserver_request_total`` for the verbs the operator uses
  (Jobs POST/GET/LIST/WATCH/DELETE, pods LIST/WATCH, events LIST/WATCH, nodes LIST), the bench's
  own left out;
* watch connections: the most watches of those kinds open on the server at once, less those open
  before the processes started, and per process;
* detection latency: an independent watch in the bench notes when it first sees each Job's
  terminal condition; the figure is the time from then until that step's ``launch`` returned
  (both read the system's monotonic clock);
* wall time against the Job controller's (first Job seen created to last Job seen finished) and
  the peak RSS of the process that hosts the processes.

A "process" is simulated by an operator of its own with an API client of its own, as separate
processes would be; all of them live in one child process of the bench (``--processes 1``
and many steps is the one-process fan-out: 5,000 steps from one process).

Usage: ``python bench/fanin.py [--processes 1 10 50 200] [--steps-each 1] [--duration 5s]``.
The machine is shared and noisy: compare figures taken in one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402
    JobTimes,
    add_simulated_nodes,
    delta,
    kubeconfig,
    metrics_text,
    new_namespace,
    operator_config,
    request_counts,
    run_parallel,
    samples,
    step_info,
    summary,
)

from k8s_step_operator import KubernetesJobStepOperator  # noqa: E402
from k8s_step_operator._job.naming import job_name  # noqa: E402

POOL_LABEL = "k8s-step-operator.io/pool"
# The kinds a step's watcher may watch, as the API server's metrics name them (group, resource).
WATCHED = {
    ("batch", "jobs"),
    ("", "pods"),
    ("", "events"),
    ("events.k8s.io", "events"),
    ("kueue.x-k8s.io", "workloads"),
}
# The steps here have no queue: Kueue's own watches of Workloads are not counted.
OUR_VERBS = {
    "jobs": ("POST", "GET", "LIST", "WATCH", "DELETE"),
    "pods": ("LIST", "WATCH"),
    "events": ("LIST", "WATCH"),
    "nodes": ("LIST",),
}


# -- the API server's own counters -------------------------------------------------------------


def watch_events(text: str) -> dict[str, float]:
    """Watch events sent so far, per watched resource."""
    counts: dict[str, float] = {}
    for lab, value in samples(text, "apiserver_watch_events_total"):
        key = (lab.get("group", ""), lab.get("resource") or lab.get("kind", "").lower() + "s")
        if key in WATCHED:
            counts[key[1]] = counts.get(key[1], 0.0) + value
    return counts


def requests(text: str) -> dict[str, float]:
    """Requests so far of the verbs the operator uses, per "VERB resource" (no subresources)."""
    return request_counts(text, OUR_VERBS)


def open_watches(text: str) -> float:
    """Watches of the watched kinds open now."""
    return sum(
        value
        for lab, value in samples(text, "apiserver_longrunning_requests")
        if lab.get("verb") == "WATCH" and (lab.get("group", ""), lab.get("resource")) in WATCHED
    )


def open_log_streams(text: str) -> float:
    """Log streams (pods/log) open now."""
    return sum(
        value
        for lab, value in samples(text, "apiserver_longrunning_requests")
        if lab.get("resource") == "pods" and lab.get("subresource") == "log"
    )


class Sampler:
    """The most watches (and log streams) open at once, sampled from the server's metrics."""

    def __init__(self, api: k8s.ApiClient, interval: float = 0.5) -> None:
        self.api = api
        self.interval = interval
        text = metrics_text(api)
        self.base_watches = open_watches(text)
        self.base_logs = open_log_streams(text)
        self.peak_watches = 0.0
        self.peak_logs = 0.0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                text = metrics_text(self.api)
            except Exception:  # a missed sample only
                continue
            self.peak_watches = max(self.peak_watches, open_watches(text) - self.base_watches)
            self.peak_logs = max(self.peak_logs, open_log_streams(text) - self.base_logs)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)


# -- the namespace and the nodes -----------------------------------------------------------------


def add_nodes() -> None:
    """The simulated CPU nodes the steps run on (room for thousands of pods)."""
    add_simulated_nodes("nodes.yaml", quiet=True)


# -- the child: N simulated processes --------------------------------------------------------------


def child(namespace: str, processes: int, steps_each: int, duration: str, logs: bool) -> None:
    """Run ``processes`` operators (each its own API client), each launching ``steps_each`` steps
    of one run at once; print what happened as JSON."""
    logging.basicConfig(level=logging.WARNING)
    operators = [
        KubernetesJobStepOperator(
            f"p{i}",
            config=operator_config(
                namespace, stream_logs=logs, node_selector={POOL_LABEL: "bench"}
            ),
        )
        for i in range(processes)
    ]
    runs = [f"fanin-{uuid.uuid4().hex[:8]}" for _ in range(processes)]
    returned: dict[str, float] = {}
    admin = k8s_config.new_client_from_config(config_file=kubeconfig())
    times = JobTimes(admin, namespace, timeout_seconds=3600)
    times.ready.wait(10)

    def one(i: int) -> None:
        process, step = divmod(i, steps_each)
        info = step_info(runs[process], f"s{step}", duration)
        name = job_name(info.run_id, info.pipeline_step_name, info.step_run_id)
        operators[process].launch(info, ["true"], {})
        returned[name] = time.monotonic()

    t0 = time.monotonic()
    errors = run_parallel(one, processes * steps_each, daemon=True)
    wall = time.monotonic() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for op in operators:
        op.close()
    times.stop(join_timeout=10)
    print(
        json.dumps(
            {
                "wall_s": round(wall, 2),
                "errors": len(errors),
                "first_errors": [str(e)[:300] for e in errors[:3]],
                "peak_rss_mb": round(rss, 1),
                "returned": returned,
                "created": times.created,
                "finished": times.finished,
                "bench_watch_events": times.received,
                "bench_requests": times.requests,
            }
        )
    )


# -- one round, seen from the bench ------------------------------------------------------------


def fanin_round(
    admin: k8s.ApiClient,
    processes: int,
    steps_each: int = 1,
    duration: str = "5s",
    logs: bool = False,
) -> dict[str, Any]:
    """``processes`` processes in one namespace, each following ``steps_each`` steps of its own."""
    ns = new_namespace(admin, "bench-fanin")
    steps = processes * steps_each
    try:
        time.sleep(1)  # let the namespace's creation settle out of the counters
        sampler = Sampler(admin)
        before = metrics_text(admin)
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                ns,
                str(processes),
                str(steps_each),
                duration,
                "1" if logs else "0",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        sampler.stop()
        time.sleep(1)  # the closed watches are counted when they end
        after = metrics_text(admin)
        if done.returncode != 0:
            raise RuntimeError(f"the child failed: {done.stderr[-3000:]}")
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        returned: dict[str, float] = figures.pop("returned")
        created: dict[str, float] = figures.pop("created")
        finished: dict[str, float] = figures.pop("finished")
        events = delta(watch_events(after), watch_events(before))
        # Less the bench's own watch of Jobs: its events, its list and watches, its connection.
        events["jobs"] = events.get("jobs", 0.0) - figures.pop("bench_watch_events")
        reqs = delta(requests(after), requests(before))
        reqs["LIST jobs"] = reqs.get("LIST jobs", 0.0) - 1
        reqs["WATCH jobs"] = reqs.get("WATCH jobs", 0.0) - (figures.pop("bench_requests") - 1)
        watches = max(0.0, sampler.peak_watches - 1)
        reqs = {k: v for k, v in reqs.items() if v}
        latencies = [(returned[n] - finished[n]) * 1000 for n in returned if n in finished]
        controller = (
            max(finished.values()) - min(created.values()) if finished and created else float("nan")
        )
        return {
            "processes": processes,
            "steps": steps,
            "completed": len(returned),
            "errors": figures["errors"],
            "first_errors": figures["first_errors"],
            "watch_events_per_step": round(sum(events.values()) / steps, 1),
            "watch_events_by_kind": {k: round(v) for k, v in sorted(events.items())},
            "requests_per_step": round(sum(reqs.values()) / steps, 2),
            "requests_by_verb": {k: round(v) for k, v in sorted(reqs.items())},
            "watch_connections_peak": round(watches),
            "watch_connections_per_process": round(watches / processes, 2),
            "log_streams_peak": round(sampler.peak_logs),
            "detection_ms": summary(latencies),
            "wall_s": figures["wall_s"],
            "controller_wall_s": round(controller, 2),
            "wall_ratio": round(figures["wall_s"] / controller, 3),
            "peak_rss_mb": figures["peak_rss_mb"],
        }
    finally:
        try:
            k8s.CoreV1Api(admin).delete_namespace(ns)
        except Exception as e:  # best effort
            logging.warning("could not delete namespace %s: %s", ns, e)
        # Wait until the namespace controller has listed and deleted everything in it: that work
        # would otherwise count in the next round's figures.
        t0 = time.monotonic()
        while time.monotonic() < t0 + 300:
            try:
                k8s.CoreV1Api(admin).read_namespace(ns)
            except Exception:
                break
            time.sleep(1)
        print(f"namespace {ns} deleted in {time.monotonic() - t0:.0f}s", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--child"]:
        child(args[1], int(args[2]), int(args[3]), args[4], args[5] == "1")
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, nargs="*", default=[1, 10, 50, 200])
    p.add_argument("--steps-each", type=int, default=1, help="steps per process")
    p.add_argument("--duration", default="5s", help="how long each step runs")
    p.add_argument("--logs", action="store_true", help="stream the steps' logs")
    opts = p.parse_args(args)
    logging.basicConfig(level=logging.WARNING)
    admin = k8s_config.new_client_from_config(config_file=kubeconfig())
    add_nodes()
    rounds = [
        fanin_round(admin, n, opts.steps_each, opts.duration, opts.logs) for n in opts.processes
    ]
    print(json.dumps({"cpus": os.cpu_count(), "fanin": rounds}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
