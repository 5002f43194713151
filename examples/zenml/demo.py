"""Run ``pipeline.py`` with real ZenML on the local cluster's real node, in local mode.

What a user of ZenML without a server does, each command printed as it runs:

1. a ZenML of its own in ``--dir`` (``ZENML_CONFIG_PATH``: a SQLite store and a local artifact
   store under ``<dir>/config/local_stores``; the pipeline's source root in ``<dir>/repo``);
2. the namespace ``demo-zenml``, a ``local`` PersistentVolume on the real node for the local
   stores directory (``e2e/cluster.py local-pv``) and a claim bound to it;
3. ``zenml init``, the flavor, the step operator in local mode, a stack with it;
4. ``python pipeline.py``, then ``zenml pipeline runs list``.

Run again, it reuses all of it and adds a run. ``make demo-zenml`` builds what this needs
(the cluster with its real node, the ZenML step image, the ZenML environment) and runs it.
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

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
NAMESPACE = "demo-zenml"
CLAIM = "zenml-stores"
REAL_LABEL = "k8s-step-operator.io/real-node"
IMAGE = "localhost/k8s-step-operator-zenml:dev"
FLAVOR = "k8s_step_operator.integrations.zenml.flavor.KubernetesJobStepOperatorFlavor"


def say(text: str) -> None:
    """A section heading."""
    print(f"\n== {text}", flush=True)


def run(argv: list[str], *, env: dict[str, str], cwd: Path, check: bool = True) -> int:
    """Print a command as a shell would show it, run it, and stop the demo if it fails."""
    print("$ " + shlex.join(argv), flush=True)
    code = subprocess.run(argv, env=env, cwd=cwd, check=False).returncode
    if check and code != 0:
        raise SystemExit(f"`{shlex.join(argv)}` exited {code}")
    return code


def real_node(core: k8s.CoreV1Api, wait: float = 60.0) -> str:
    """The Ready node that runs containers, once it has the ZenML step image.

    The kubelet lists a just-imported image in the node's status at its next status update
    (every 10 s or so): wait for it that long.
    """
    deadline = time.monotonic() + wait
    while True:
        ready_nodes = []
        for node in core.list_node(label_selector=f"{REAL_LABEL}=true").items:
            ready = {c.type: c.status for c in node.status.conditions or []}.get("Ready")
            if ready == "True":
                ready_nodes.append(node.metadata.name)
                images = {n for i in node.status.images or () for n in i.names or ()}
                if IMAGE in images:
                    return str(node.metadata.name)
        if not ready_nodes:
            raise SystemExit(
                "no Ready node that runs containers: the ZenML demo needs the real node "
                "(`make cluster` as root starts it)"
            )
        if time.monotonic() > deadline:
            raise SystemExit(f"{IMAGE} is not on node {ready_nodes[0]}: run `make zenml-image`")
        time.sleep(1)


def ensure_namespace(core: k8s.CoreV1Api, root: bool) -> None:
    """The steps' namespace; root pods (local mode as root) need the baseline profile."""
    level = "baseline" if root else "restricted"
    try:
        core.read_namespace(NAMESPACE)
        return
    except ApiException as e:
        if e.status != 404:
            raise
    core.create_namespace(
        {
            "metadata": {
                "name": NAMESPACE,
                "labels": {"pod-security.kubernetes.io/enforce": level},
            }
        }
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_service_account("default", NAMESPACE)
            return
        except ApiException:
            time.sleep(0.2)


def ensure_claim(core: k8s.CoreV1Api, stores: Path, node: str, env: dict[str, str]) -> None:
    """A local PersistentVolume for the local stores on ``node``, and the claim bound to it."""
    pv = "zenml-demo-" + hashlib.sha256(str(stores).encode()).hexdigest()[:10]
    try:
        claim = core.read_namespaced_persistent_volume_claim(CLAIM, NAMESPACE)
        if claim.spec.volume_name == pv:
            return
        core.delete_namespaced_persistent_volume_claim(CLAIM, NAMESPACE)
    except ApiException as e:
        if e.status != 404:
            raise
    try:
        existing = core.read_persistent_volume(pv)
        if existing.status.phase != "Available":
            core.delete_persistent_volume(pv)
            existing = None
    except ApiException as e:
        if e.status != 404:
            raise
        existing = None
    if existing is None:
        run(
            [
                sys.executable,
                str(REPO / "e2e" / "cluster.py"),
                "local-pv",
                pv,
                str(stores),
                "--node",
                node,
                "--size",
                "1Gi",
            ],
            env=env,
            cwd=REPO,
        )
    print(f"$ kubectl create -n {NAMESPACE} persistentvolumeclaim {CLAIM} (volumeName {pv})")
    core.create_namespaced_persistent_volume_claim(
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": CLAIM},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "local-storage",
                "volumeName": pv,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )


def register(zenml: str, kubeconfig: str, env: dict[str, str], repo: Path, root: bool) -> None:
    """``zenml init``, the flavor, the step operator in local mode and the stack, by the CLI."""
    placement = [
        f'--node_selector={{"{REAL_LABEL}": "true"}}',
        "--tolerations=["
        f'{{"key": "{REAL_LABEL}", "operator": "Exists", "effect": "NoSchedule"}}, '
        '{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]',
    ]
    run([zenml, "init"], env=env, cwd=repo)
    run([zenml, "step-operator", "flavor", "register", FLAVOR], env=env, cwd=repo)
    run(
        [
            zenml,
            "step-operator",
            "register",
            "gpu-jobs",
            "--flavor=kubernetes_job",
            f"--namespace={NAMESPACE}",
            f"--kubeconfig_path={kubeconfig}",
            "--local=true",
            f"--local_stores_claim={CLAIM}",
            "--pending_timeout=300",
            *placement,
            # Local mode runs the pods as this user, so that they write the local stores.
            *(["--pod_security_profile=none"] if root else []),
        ],
        env=env,
        cwd=repo,
    )
    run(
        [
            zenml,
            "stack",
            "register",
            "k8s-local",
            "-o",
            "default",
            "-a",
            "default",
            "-s",
            "gpu-jobs",
        ],
        env=env,
        cwd=repo,
    )
    run([zenml, "stack", "set", "k8s-local"], env=env, cwd=repo)


def main(argv: list[str] | None = None) -> int:
    """Set up what is missing, run the pipeline, list the runs; the pipeline's exit status."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    cache = Path(os.environ.get("K8SSO_CACHE", str(Path.home() / ".cache" / "k8s-step-operator")))
    # Outside any git checkout: ZenML uploads the pipeline's code as git lists it, and a
    # gitignored directory (like the checkout's .cluster/) would upload nothing. One per
    # checkout: its ZenML stack names this checkout's cluster.
    checkout = hashlib.sha256(str(REPO).encode()).hexdigest()[:8]
    ap.add_argument("--dir", default=str(cache / f"zenml-demo-{checkout}"), help="demo state")
    args = ap.parse_args(argv)
    state = Path(args.dir).resolve()
    config, repo = state / "config", state / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    kubeconfig = os.environ.get("KUBECONFIG") or str(REPO / ".cluster" / "kubeconfig")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZENML_")}
    env.update(
        KUBECONFIG=kubeconfig,
        ZENML_CONFIG_PATH=str(config),
        ZENML_ANALYTICS_OPT_IN="false",
        ZENML_LOGGING_COLORS_DISABLED="true",
    )
    zenml = str(Path(sys.executable).parent / "zenml")
    root = os.getuid() == 0

    api = k8s_config.new_client_from_config(config_file=kubeconfig)
    core = k8s.CoreV1Api(api)
    node = real_node(core)
    say(f"ZenML in {state} (store and artifact store in {config / 'local_stores'})")
    if not (repo / ".zen").exists():
        register(zenml, kubeconfig, env, repo, root)
    else:
        print("(already set up: reusing its store, stack and volume)")
    say(f"namespace {NAMESPACE} and the local stores' volume on {node}")
    ensure_namespace(core, root)
    ensure_claim(core, config / "local_stores", node, env)
    shutil.copy(HERE / "pipeline.py", repo / "pipeline.py")

    say("the pipeline: load_data (CPU) -> train (1 GPU) -> evaluate, each step a Job")
    started = time.monotonic()
    code = run([sys.executable, "pipeline.py"], env=env, cwd=repo, check=False)
    print(f"(pipeline process exited {code} after {time.monotonic() - started:.1f} s)")
    say("what ZenML recorded")
    run([zenml, "pipeline", "runs", "list", "-c", "name,status", "-o", "tsv"], env=env, cwd=repo)
    return code


if __name__ == "__main__":
    sys.exit(main())
