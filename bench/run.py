"""Benchmarks of launch() against a live cluster; every figure is printed as JSON.

* detection latency: an independent watch in this process notes when it first sees a Job's
  terminal condition; the figure is the time from then until ``launch`` returns;
* API requests per step, read from the API server's own counters (``apiserver_request_total``)
  for the verbs and resources the operator uses, less the same counters' idle rate;
* fan-out: N steps launched at once from one child process; its wall time against the job
  controller's (first Job seen created to last Job seen finished, by an independent watch), the
  child's peak RSS, and the most watch connections open on the server at once;
* steps on several nodes (``ranks.py``): 8- and 32-rank steps from launch to every rank
  running, and from one rank's failure to the error and to the other ranks gone, with and
  without Kueue.

Usage: ``python bench/run.py [--steps 50] [--fanout 500] [--long 60] [--ranks-repeat 3]
[--short] [--only NAME ...]``; CI runs the multi-node cases once each (``--ranks-repeat 1
--short``, said in the output).
The machine is shared and noisy: each figure is reported with min / median / max where it is a
distribution, and repeated runs are what to compare.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from k8s_step_operator import (  # noqa: E402
    KubernetesJobStepOperator,
    KubernetesJobStepOperatorConfig,
    ResourceSettings,
    StepConfiguration,
    StepRunInfo,
)

SETTINGS_KEY = "step_operator.kubernetes_job"
OUR_VERBS = {
    "jobs": ("POST", "GET", "LIST", "WATCH", "DELETE"),
    "pods": ("LIST", "WATCH"),
    "events": ("LIST", "WATCH"),
    "nodes": ("LIST",),
    "nodepools": ("LIST",),
    "workloads": ("LIST", "WATCH"),
    "localqueues": ("GET",),
}


def kubeconfig() -> str:
    return os.environ.get("KUBECONFIG") or str(ROOT / ".cluster" / "kubeconfig")


OPERATORS: list[KubernetesJobStepOperator] = []


def make_operator(namespace: str, **settings: Any) -> KubernetesJobStepOperator:
    config = KubernetesJobStepOperatorConfig(
        kubeconfig_path=kubeconfig(),
        namespace=namespace,
        image="localhost/bench:1",
        image_pull_policy="IfNotPresent",
        **settings,
    )
    op = KubernetesJobStepOperator("bench", config=config)
    OPERATORS.append(op)
    return op


def step_info(run: str, step: str, duration: str) -> StepRunInfo:
    return StepRunInfo(
        step_run_id=str(uuid.uuid4()),
        run_id=run,
        run_name=run,
        pipeline_step_name=step,
        config=StepConfiguration(
            name=step,
            settings={
                SETTINGS_KEY: {
                    "pod_annotations": {"sim.k8s-step-operator.io/run-duration": duration}
                }
            },
        ),
    )


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "min": round(ordered[0], 4),
        "p50": round(statistics.median(ordered), 4),
        "p99": round(p99, 4),
        "max": round(ordered[-1], 4),
    }


class JobTimes:
    """An independent watch on the namespace's Jobs: when each was first seen and finished."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.batch = k8s.BatchV1Api(api)
        self.namespace = namespace
        self.created: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self._stop = threading.Event()
        self._resp: Any = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        listed = json.loads(
            self.batch.list_namespaced_job(self.namespace, _preload_content=False).data
        )
        rv = listed["metadata"]["resourceVersion"]
        while not self._stop.is_set():
            self._resp = self.batch.list_namespaced_job(
                self.namespace,
                watch=True,
                resource_version=rv,
                allow_watch_bookmarks=True,
                timeout_seconds=300,
                _preload_content=False,
            )
            self.ready.set()
            try:
                for line in iter_resp_lines(self._resp):
                    now = time.monotonic()
                    event = json.loads(line)
                    obj = event["object"]
                    rv = obj["metadata"].get("resourceVersion", rv)
                    if event["type"] not in ("ADDED", "MODIFIED"):
                        continue
                    name = obj["metadata"]["name"]
                    self.created.setdefault(name, now)
                    for c in (obj.get("status") or {}).get("conditions") or []:
                        if c.get("status") == "True" and c.get("type") in (
                            "SuccessCriteriaMet",
                            "Complete",
                            "FailureTarget",
                            "Failed",
                        ):
                            self.finished.setdefault(name, now)
            except Exception:
                if self._stop.is_set():
                    return

    def stop(self) -> None:
        self._stop.set()
        if self._resp is not None:
            self._resp.close()


def metrics_text(api: k8s.ApiClient) -> str:
    import urllib3

    cfg = api.configuration
    pool = urllib3.PoolManager(
        cert_reqs="CERT_REQUIRED",
        ca_certs=cfg.ssl_ca_cert,
        cert_file=cfg.cert_file,
        key_file=cfg.key_file,
    )
    headers = {}
    if cfg.api_key.get("authorization"):
        headers["Authorization"] = cfg.api_key["authorization"]
    r = pool.request("GET", cfg.host + "/metrics", headers=headers, timeout=30)
    return str(r.data.decode())


def _labels(line: str) -> dict[str, str]:
    inside = line[line.index("{") + 1 : line.rindex("}")]
    out: dict[str, str] = {}
    for part in inside.split('",'):
        if "=" in part:
            k, _, v = part.partition("=")
            out[k.strip()] = v.strip().strip('"')
    return out


def our_requests(text: str) -> float:
    """Requests of the verbs the operator uses on each resource (pods/log apart).

    Other components use the same resources with other verbs (the kubelet GETs its node, the job
    controller creates pods and updates Job status, KWOK patches pod status); those are left out.
    """
    return sum(request_breakdown(text).values())


def request_breakdown(text: str) -> dict[str, float]:
    """``our_requests`` per "VERB resource"."""
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        lab = _labels(line)
        if lab.get("subresource"):
            continue
        resource, verb = lab.get("resource", ""), lab.get("verb", "")
        if verb in OUR_VERBS.get(resource, ()):
            key = f"{verb} {resource}"
            counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def open_watches(text: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("apiserver_longrunning_requests{"):
            lab = _labels(line)
            if lab.get("verb") == "WATCH" and lab.get("resource") in {"jobs", "pods", "events"}:
                total += float(line.rsplit(" ", 1)[1])
    return total


def run_parallel(fn: Callable[[int], None], count: int, width: int) -> list[BaseException]:
    errors: list[BaseException] = []
    sem = threading.Semaphore(width)

    def one(i: int) -> None:
        with sem:
            try:
                fn(i)
            except BaseException as e:  # reported below
                errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def namespace(admin: k8s.ApiClient, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    k8s.CoreV1Api(admin).create_namespace({"metadata": {"name": name}})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sas = k8s.CoreV1Api(admin).list_namespaced_service_account(name).items
        if any(sa.metadata.name == "default" for sa in sas):
            break
        time.sleep(0.2)
    return name


_TO_DROP: list[str] = []


def drop_namespace(admin: k8s.ApiClient, name: str) -> None:
    """Delete the namespace at the very end: deleting one makes the namespace controller list
    every resource in it, which would count as requests in the figures taken meanwhile."""
    _TO_DROP.append(name)


def drop_namespaces(admin: k8s.ApiClient) -> None:
    for name in _TO_DROP:
        try:
            k8s.CoreV1Api(admin).delete_namespace(name)
        except Exception as e:  # best effort at the end
            logging.warning("could not delete namespace %s: %s", name, e)


def bench_latency(
    admin: k8s.ApiClient, steps: int, width: int, stream_logs: bool = True
) -> dict[str, Any]:
    ns = namespace(admin, "bench-latency")
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
            "latency_ms": stats(latencies) if latencies else {},
        }
    finally:
        drop_namespace(admin, ns)


def bench_unschedulable(admin: k8s.ApiClient, steps: int) -> dict[str, Any]:
    """Seconds from calling launch to the error for 9 GPUs where nodes have at most 8."""
    from k8s_step_operator import UnschedulableError

    ns = namespace(admin, "bench-unsched")
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
            "seconds": stats(took) if took else {},
        }
    finally:
        drop_namespace(admin, ns)


def stop_watchers() -> None:
    """Close every operator of this process (their watches end), and let the server count."""
    while OPERATORS:
        OPERATORS.pop().close()
    time.sleep(1)


def bench_requests(admin: k8s.ApiClient, duration_s: int, steps: int) -> dict[str, Any]:
    ns = namespace(admin, "bench-requests")
    try:
        stop_watchers()  # earlier figures' lingering watchers would be counted here otherwise
        # Wait until nothing else uses these verbs (a namespace being deleted is listed through
        # by the namespace controller), so that the figure counts the operator's requests only.
        idle_rate = -1.0
        for _ in range(10):
            before = our_requests(metrics_text(admin))
            time.sleep(3)
            idle_rate = (our_requests(metrics_text(admin)) - before) / 3
            if idle_rate == 0:
                break
        op = make_operator(ns)
        run = f"req-{uuid.uuid4().hex[:6]}"
        start = request_breakdown(metrics_text(admin))
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
        end = request_breakdown(metrics_text(admin))
        breakdown = {k: v - start.get(k, 0.0) for k, v in end.items() if v - start.get(k, 0.0)}
        delta = sum(breakdown.values())
        return {
            "step_seconds": duration_s,
            "steps": steps,
            "errors": [str(e) for e in errors][:3],
            "idle_rate_per_s_before": round(idle_rate, 3),
            "seconds": round(elapsed, 1),
            "requests": round(delta, 1),
            "requests_per_step": round(delta / steps, 2),
            "breakdown": breakdown,
        }
    finally:
        drop_namespace(admin, ns)


def fanout_child(ns: str, count: int, duration: str) -> None:
    """Run in a child process: launch ``count`` steps at once, print JSON figures."""
    logging.basicConfig(level=logging.WARNING)
    op = make_operator(ns, stream_logs=True, node_selector={"k8s-step-operator.io/pool": "bench"})
    run = f"fan-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    errors = run_parallel(
        lambda i: op.launch(step_info(run, f"s{i}", duration), ["true"], {}), count, count
    )
    wall = time.monotonic() - t0
    print(
        json.dumps(
            {
                "wall_s": round(wall, 2),
                "errors": len(errors),
                "first_errors": [str(e)[:300] for e in errors[:3]],
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )


class QueueTimes:
    """An independent watch on a namespace's Jobs and pods: when each Job was first seen
    un-suspended (Kueue admitted it) and when its pod was first seen Running."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.batch, self.core = k8s.BatchV1Api(api), k8s.CoreV1Api(api)
        self.namespace = namespace
        self.admitted: dict[str, float] = {}
        self.running: dict[str, float] = {}
        self._stop = threading.Event()
        self._resps: list[Any] = []
        self.threads = [
            threading.Thread(target=self._watch, args=(kind,), daemon=True)
            for kind in ("jobs", "pods")
        ]
        for th in self.threads:
            th.start()

    def _watch(self, kind: str) -> None:
        fn = self.batch.list_namespaced_job if kind == "jobs" else self.core.list_namespaced_pod
        rv = json.loads(fn(self.namespace, _preload_content=False).data)["metadata"][
            "resourceVersion"
        ]
        while not self._stop.is_set():
            resp = fn(
                self.namespace,
                watch=True,
                resource_version=rv,
                timeout_seconds=300,
                _preload_content=False,
            )
            self._resps.append(resp)
            try:
                for line in iter_resp_lines(resp):
                    now = time.monotonic()
                    obj = json.loads(line)["object"]
                    rv = obj["metadata"].get("resourceVersion", rv)
                    if kind == "jobs":
                        if (obj.get("spec") or {}).get("suspend") is False:
                            self.admitted.setdefault(obj["metadata"]["name"], now)
                    elif (obj.get("status") or {}).get("phase") == "Running":
                        job = (obj["metadata"].get("labels") or {}).get(
                            "batch.kubernetes.io/job-name", ""
                        )
                        self.running.setdefault(job, now)
            except Exception:
                if self._stop.is_set():
                    return

    def stop(self) -> None:
        self._stop.set()
        for resp in self._resps:
            resp.close()


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
    custom = k8s.CustomObjectsApi(admin)
    try:
        custom.get_api_resources("kueue.x-k8s.io", "v1beta2")
    except ApiException:
        return {"skipped": "Kueue is not installed in this cluster"}
    ns = namespace(admin, "bench-kueue")
    tag = ns.removeprefix("bench-kueue-")
    flavor, cq = f"bench-h100-{tag}", f"bench-{tag}"
    group, version = "kueue.x-k8s.io", "v1beta2"
    custom.create_cluster_custom_object(
        group,
        version,
        "resourceflavors",
        {
            "apiVersion": f"{group}/{version}",
            "kind": "ResourceFlavor",
            "metadata": {"name": flavor},
            "spec": {"nodeLabels": {"k8s-step-operator.io/pool": "h100"}},
        },
    )
    custom.create_cluster_custom_object(
        group,
        version,
        "clusterqueues",
        {
            "apiVersion": f"{group}/{version}",
            "kind": "ClusterQueue",
            "metadata": {"name": cq},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                "resourceGroups": [
                    {
                        "coveredResources": ["nvidia.com/gpu"],
                        "flavors": [
                            {
                                "name": flavor,
                                "resources": [{"name": "nvidia.com/gpu", "nominalQuota": gpus}],
                            }
                        ],
                    }
                ],
            },
        },
    )
    custom.create_namespaced_custom_object(
        group,
        version,
        ns,
        "localqueues",
        {
            "apiVersion": f"{group}/{version}",
            "kind": "LocalQueue",
            "metadata": {"name": "gpu"},
            "spec": {"clusterQueue": cq},
        },
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

        start = request_breakdown(metrics_text(admin))
        t0 = time.monotonic()
        errors = run_parallel(one, steps, steps)
        wall = time.monotonic() - t0
        stop_watchers()
        end = request_breakdown(metrics_text(admin))
        breakdown = {k: v - start.get(k, 0.0) for k, v in end.items() if v - start.get(k, 0.0)}
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
                "job_controller": stats(to_running) if to_running else {},
                "operator_reports_running": stats(ours) if ours else {},
            },
            "operator_lag_behind_pod_running_ms": stats(our_lag) if our_lag else {},
        }
    finally:
        times.stop()
        operator_log.removeHandler(seen)
        operator_log.setLevel(level)
        operator_log.propagate = propagate
        for kind, name in (("clusterqueues", cq), ("resourceflavors", flavor)):
            try:
                custom.delete_cluster_custom_object(group, version, kind, name)
            except ApiException as e:
                logging.warning("could not delete %s %s: %s", kind, name, e)
        drop_namespace(admin, ns)


def bench_fanout(admin: k8s.ApiClient, count: int, duration: str) -> dict[str, Any]:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "e2e" / "cluster.py"),
            "add-nodes",
            str(ROOT / "bench" / "nodes.yaml"),
        ],
        check=True,
    )
    ns = namespace(admin, "bench-fanout")
    try:
        times = JobTimes(admin, ns)
        times.ready.wait(10)
        base_watches = open_watches(metrics_text(admin))
        peak = [0.0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                peak[0] = max(peak[0], open_watches(metrics_text(admin)) - base_watches)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        child = subprocess.run(
            [sys.executable, __file__, "--fanout-child", ns, str(count), duration],
            capture_output=True,
            text=True,
            check=False,
        )
        stop.set()
        times.stop()
        if child.returncode != 0:
            raise RuntimeError(f"fan-out child failed: {child.stderr[-2000:]}")
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        controller = (
            max(times.finished.values()) - min(times.created.values())
            if times.finished and times.created
            else float("nan")
        )
        figures.update(
            {
                "steps": count,
                "controller_wall_s": round(controller, 2),
                "wall_ratio": round(figures["wall_s"] / controller, 3),
                # Minus the bench's own independent watch on Jobs.
                "server_peak_open_watches": peak[0] - 1,
                "jobs_finished_seen": len(times.finished),
            }
        )
        return figures
    finally:
        drop_namespace(admin, ns)


def main(argv: Iterable[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--fanout-child"]:
        fanout_child(args[1], int(args[2]), args[3])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=50, help="steps for the latency figure")
    p.add_argument("--width", type=int, default=5, help="steps at once for the latency figure")
    p.add_argument("--fanout", type=int, default=500, help="steps launched at once")
    p.add_argument("--fanout-duration", default="5s", help="how long each fan-out step runs")
    p.add_argument("--long", type=int, default=60, help="seconds of the long step")
    p.add_argument("--queued", type=int, default=100, help="steps for the Kueue figure")
    p.add_argument("--ranks-repeat", type=int, default=3, help="runs of each multi-node case")
    p.add_argument(
        "--short", action="store_true", help="CI's short form (fewer runs), said in the output"
    )
    p.add_argument(
        "--only",
        nargs="*",
        default=["latency", "unschedulable", "requests", "kueue", "fanout", "ranks"],
    )
    opts = p.parse_args(args)
    logging.basicConfig(level=logging.WARNING)
    admin = k8s_config.new_client_from_config(config_file=kubeconfig())
    results: dict[str, Any] = {"cpus": os.cpu_count()}
    if "latency" in opts.only:
        results["detection_latency"] = bench_latency(admin, opts.steps, 1)
        results["detection_latency_concurrent"] = bench_latency(admin, opts.steps, opts.width)
    if "latency-nologs" in opts.only:
        results["detection_latency_no_logs"] = bench_latency(
            admin, opts.steps, opts.width, stream_logs=False
        )
    if "unschedulable" in opts.only:
        results["unschedulable"] = bench_unschedulable(admin, 10)
    if "requests" in opts.only:
        results["requests_1s_alone"] = bench_requests(admin, 1, 1)
        results["requests_long_alone"] = bench_requests(admin, opts.long, 1)
        results["requests_1s_x5"] = bench_requests(admin, 1, 5)
        results["requests_long_x5"] = bench_requests(admin, opts.long, 5)
    if "kueue" in opts.only:
        results["kueue"] = bench_kueue(admin, opts.queued, 8, "2s")
    if "fanout" in opts.only:
        results["fanout"] = bench_fanout(admin, opts.fanout, opts.fanout_duration)
    if "ranks" in opts.only:
        from ranks import bench_ranks  # bench/ranks.py, beside this script

        results["ranks"] = bench_ranks(admin, [8, 32], opts.ranks_repeat, opts.short)
    drop_namespaces(admin)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
