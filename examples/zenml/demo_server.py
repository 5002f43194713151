"""The production ZenML stack on the local cluster, from nothing, then a run and its metadata.

What a team does on EKS or GKE with a hosted ZenML server, each command printed as it runs:

1. the steps' namespace and the chart in it, its pipeline account allowed to run ZenML's
   kubernetes orchestrator (``pipeline.rbac.zenmlOrchestrator``);
2. a ZenML client logged in to the ZenML server with a service account's API key (what
   ``make stack-services`` started; on a real cluster, your server's URL);
3. the stack, with ZenML's own command line (``server_stack.registration``): the kubernetes
   orchestrator, the s3 artifact store on the object store, our ``kubernetes_job`` step
   operator, and the registry and image builder ZenML requires;
4. ``python server_pipeline.py``: ZenML's orchestrator pod runs the pipeline on the cluster, the
   GPU step goes through our operator from inside ZenML's step pod;
5. the run's steps and, for ours, the metadata recorded in the server.

Run again, it reuses the namespace, the chart and the stack, and adds a run. ``make
demo-zenml-server`` builds and starts what this needs (the cluster with its real node and pod
network, the ZenML image, the object store and the ZenML server) and runs it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from examples.zenml import server_stack  # noqa: E402

NAMESPACE = "zenml-prod"
RELEASE = "k8sso"
STACK = "k8s-prod"
STATE = REPO / ".cluster" / "stack" / "stack.json"

LIST_STEPS = """
import json
from zenml.client import Client

client = Client()
run = client.get_pipeline("gpu_training").last_run
print(f"run {run.name}: {run.status.value}")
rows = [("step", "status", "where", "queued", "sched.", "starting", "running", "GPU", "GPU-s")]
for s in client.list_run_steps(pipeline_run_id=run.id, sort_by="asc:created", size=100).items:
    card = s.run_metadata.get("kubernetes_job")
    if card:
        rows.append((
            s.name, s.status.value, card["node"], f"{card['queued_seconds']:.2f}",
            f"{card['scheduling_seconds']:.2f}", f"{card['starting_seconds']:.2f}",
            f"{card['running_seconds']:.2f}", card["gpu_model"] or "-",
            f"{card['gpu_seconds']:.2f}",
        ))
    else:
        rows.append((s.name, s.status.value, "ZenML's step pod", "", "", "", "", "", ""))
widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
for r in rows:
    print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
for s in run.steps.values():
    if "kubernetes_job" in s.run_metadata:
        print(f"\\nmetadata of {s.name} (key kubernetes_job):")
        print(json.dumps(s.run_metadata["kubernetes_job"], indent=2, sort_keys=True))
"""


def say(text: str) -> None:
    """A section heading."""
    print(f"\n== {text}", flush=True)


def run(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path = REPO) -> None:
    """Print a command as a shell would show it, run it, and stop the demo if it fails."""
    print("$ " + shlex.join(argv), flush=True)
    code = subprocess.run(argv, env=env, cwd=cwd, check=False).returncode
    if code != 0:
        raise SystemExit(f"`{shlex.join(argv)}` exited {code}")


def helm_binary() -> str:
    """The Helm of the local cluster's build (``make core-binaries``)."""
    versions = dict(
        line.split("=", 1)
        for line in (REPO / "e2e" / "build" / "versions.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    cache = Path(os.environ.get("K8SSO_CACHE", str(Path.home() / ".cache" / "k8s-step-operator")))
    helm = cache / "bin" / f"helm-{versions['HELM_VERSION'].strip()}" / "helm"
    if not helm.exists():
        raise SystemExit(f"{helm} missing: run `make core-binaries`")
    return str(helm)


def cluster_side(kubeconfig: str) -> tuple[str, str]:
    """The namespace and the chart; returns the chart's pipeline and step accounts."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from kubernetes.client.rest import ApiException

    api = k8s_config.new_client_from_config(config_file=kubeconfig)
    core = k8s.CoreV1Api(api)
    try:
        core.read_namespace(NAMESPACE)
    except ApiException as e:
        if e.status != 404:
            raise
        # ZenML's own pods run as root: the namespace admits the baseline profile; our Jobs
        # pass the restricted one.
        print(f"$ kubectl create namespace {NAMESPACE} (pod-security enforce=baseline)")
        core.create_namespace(
            {
                "metadata": {
                    "name": NAMESPACE,
                    "labels": {"pod-security.kubernetes.io/enforce": "baseline"},
                }
            }
        )
    run(
        [
            helm_binary(),
            "upgrade",
            "--install",
            RELEASE,
            str(REPO / "charts" / "k8s-step-operator"),
            "--namespace",
            NAMESPACE,
            "--kubeconfig",
            kubeconfig,
            "--set",
            "pipeline.rbac.zenmlOrchestrator=true",
        ]
    )
    api.close()
    return f"{RELEASE}-k8s-step-operator-pipeline", f"{RELEASE}-k8s-step-operator-step"


def image_on_node(kubeconfig: str, wait: float = 60.0) -> None:
    """The real node lists the ZenML image (its kubelet reports images every 10 s or so)."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    api = k8s_config.new_client_from_config(config_file=kubeconfig)
    core = k8s.CoreV1Api(api)
    deadline = time.monotonic() + wait
    try:
        while True:
            nodes = core.list_node(label_selector=f"{server_stack.REAL_LABEL}=true").items
            if not nodes:
                raise SystemExit(
                    "no node that runs containers: the demo needs the real node (`make cluster` "
                    "as root)"
                )
            names = {n for node in nodes for i in node.status.images or () for n in i.names or ()}
            if server_stack.IMAGE in names:
                return
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"{server_stack.IMAGE} is not on the real node: `make zenml-image`"
                )
            time.sleep(1)
    finally:
        api.close()


def register(
    zenml: str, env: dict[str, str], repo: Path, services: Any, spec: server_stack.StackSpec
) -> None:
    """The stack, by ZenML's command line (what exists already is kept)."""
    known = server_stack.run_zenml(
        zenml, ["stack", "describe", spec.stack], env=env, cwd=repo, show=False
    )
    if known.returncode == 0:
        print(f"(stack {spec.stack} is registered: reusing it)")
        server_stack.run_zenml(zenml, ["stack", "set", spec.stack], env=env, cwd=repo)
        return
    for args in server_stack.registration(services, spec):
        done = server_stack.run_zenml(
            zenml, args, env=env, cwd=repo, hide=(services.secret_key, services.access_key)
        )
        text = done.stdout + done.stderr
        if done.returncode != 0 and not server_stack.already_there(args, done):
            print(text[-4000:])
            raise SystemExit(f"`zenml {args[0]} {args[1]}` failed")


def main(argv: list[str] | None = None) -> int:
    """Set up what is missing, run the pipeline, list its steps and their metadata."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    cache = Path(os.environ.get("K8SSO_CACHE", str(Path.home() / ".cache" / "k8s-step-operator")))
    checkout = hashlib.sha256(str(REPO).encode()).hexdigest()[:8]
    ap.add_argument("--dir", default=str(cache / f"zenml-server-demo-{checkout}"), help="state")
    args = ap.parse_args(argv)
    state = Path(args.dir).resolve()
    repo = state / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    kubeconfig = os.environ.get("KUBECONFIG") or str(REPO / ".cluster" / "kubeconfig")
    zenml = str(Path(sys.executable).parent / "zenml")

    say("the ZenML server and the object store (make stack-services)")
    services = server_stack.local_services(kubeconfig, STATE)
    print(f"ZenML server: {services.zenml_url} (pods reach it at the same address)")
    print(f"object store: {services.s3_endpoint}, bucket {services.bucket}")
    image_on_node(kubeconfig)

    say(f"namespace {NAMESPACE} and the chart (release {RELEASE})")
    pipeline_account, step_account = cluster_side(kubeconfig)

    say("a ZenML client logged in with the stack's service account (ZENML_STORE_URL/API_KEY)")
    env = server_stack.client_env(services, state / "config")
    env["KUBECONFIG"] = kubeconfig
    if not (repo / ".zen").exists():
        server_stack.run_zenml(zenml, ["init"], env=env, cwd=repo)
    context = str(yaml.safe_load(Path(kubeconfig).read_text())["current-context"])
    spec = server_stack.local_spec(
        NAMESPACE,
        pipeline_account=pipeline_account,
        step_account=step_account,
        kube_context=context,
        prefix="demo",
        stack=STACK,
    )

    say("the stack, with ZenML's command line")
    register(zenml, env, repo, services, spec)
    described = server_stack.run_zenml(zenml, ["stack", "describe", spec.stack], env=env, cwd=repo)
    print(described.stdout)

    say("the pipeline: load_data (ZenML's step pod) -> train (1 GPU, a Job) -> evaluate")
    shutil.copy(HERE / "server_pipeline.py", repo / "server_pipeline.py")
    started = time.monotonic()
    print("$ python server_pipeline.py", flush=True)
    code = subprocess.run([sys.executable, "server_pipeline.py"], env=env, cwd=repo).returncode
    print(f"(pipeline process exited {code} after {time.monotonic() - started:.1f} s)")

    say("what the ZenML server recorded: the run's steps and their metadata")
    listed_runs = server_stack.run_zenml(
        zenml, ["pipeline", "runs", "list", "-c", "name,status", "-o", "tsv"], env=env, cwd=repo
    )
    print(listed_runs.stdout)
    print("$ python -c '<list the steps and their kubernetes_job metadata>'", flush=True)
    listed = subprocess.run(
        [sys.executable, "-c", LIST_STEPS], env=env, cwd=repo, capture_output=True, text=True
    )
    print(listed.stdout + (listed.stderr if listed.returncode else ""))
    return code or listed.returncode


if __name__ == "__main__":
    sys.exit(main())
