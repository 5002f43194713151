"""The production ZenML stack on Kubernetes, registered with ZenML's own command line.

One list of ``zenml`` commands (``registration``) makes the stack the README describes: ZenML's
``kubernetes`` orchestrator (its orchestrator pod and step pods run as the chart's pipeline
ServiceAccount), ZenML's ``s3`` artifact store, our ``kubernetes_job`` step operator (its Jobs
run as the chart's step ServiceAccount, with no token), and the container registry and image
builder ZenML insists on in such a stack (nothing is built: steps run in
``DockerSettings(parent_image=..., skip_build=True)``). ``make demo-zenml-server``, the
production tests and the benchmark all register their stacks with it.

On the local cluster (``make cluster`` with the real node, ``make stack-services``) the object
store and the ZenML server listen on the host's loopback; pods reach them through the pod
network's gateway, at the address their Services' EndpointSlices name. That address is reachable
from the host too, so one URL serves the ZenML client here and every pod, as
``https://zenml.example.com`` and S3 would on EKS or GKE (``local_services``).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
FLAVOR_SOURCE = "k8s_step_operator.integrations.zenml.flavor.KubernetesJobStepOperatorFlavor"
IMAGE = "localhost/k8s-step-operator-zenml:dev"
REAL_LABEL = "k8s-step-operator.io/real-node"
# What a pod needs to land on the local cluster's real node (the only one running containers).
REAL_NODE_SELECTOR = {REAL_LABEL: "true"}
REAL_NODE_TOLERATIONS = [
    {"key": REAL_LABEL, "operator": "Exists", "effect": "NoSchedule"},
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
]
SERVICES_NAMESPACE = "k8sso-system"
QUIET = {
    "ZENML_ANALYTICS_OPT_IN": "false",
    "ZENML_ENABLE_RICH_TRACEBACK": "false",
    "ZENML_LOGGING_COLORS_DISABLED": "true",
    "ZENML_AUTO_OPEN_DASHBOARD": "false",
}


@dataclass(frozen=True)
class Services:
    """Where the ZenML server and the object store are, for this machine and for pods alike."""

    zenml_url: str
    api_key: str
    s3_endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"


@dataclass(frozen=True)
class StackSpec:
    """The names and the cluster side of one production stack.

    Attributes:
        namespace: Where ZenML's pods and our Jobs run (the chart is installed there).
        pipeline_account: The chart's pipeline ServiceAccount (ZenML's pods run as it).
        step_account: The chart's step ServiceAccount (our Jobs run as it).
        kube_context: The kubeconfig context ZenML's orchestrator submits with.
        prefix: Where in the bucket this stack's artifacts go.
        stack: The stack's name; the components are named after it.
        operator_settings: Extra ``zenml step-operator register`` options (``--name=value``).
        orchestrator_settings: Extra ``zenml orchestrator register`` options.
    """

    namespace: str
    pipeline_account: str
    step_account: str
    kube_context: str
    prefix: str = "zenml"
    stack: str = "k8s-prod"
    operator_settings: Mapping[str, str] = field(default_factory=dict)
    orchestrator_settings: Mapping[str, str] = field(default_factory=dict)

    def name(self, component: str) -> str:
        """A component's name: ``<stack>-<component>``."""
        return f"{self.stack}-{component}"

    @property
    def step_operator(self) -> str:
        """The step operator's component name (a step's settings key is ``step_operator:<it>``)."""
        return self.name("gpu-jobs")


def _json(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "))


def real_node_pod_settings(**extra: Any) -> dict[str, Any]:
    """ZenML's KubernetesPodSettings that put a pod on the real node."""
    return {"node_selectors": REAL_NODE_SELECTOR, "tolerations": REAL_NODE_TOLERATIONS, **extra}


def registration(services: Services, spec: StackSpec) -> list[list[str]]:
    """The ``zenml`` commands (without the leading ``zenml``) that register the stack."""
    secret = spec.name("s3-credentials")
    orchestrator = [
        "orchestrator",
        "register",
        spec.name("orchestrator"),
        "--flavor=kubernetes",
        f"--kubernetes_context={spec.kube_context}",
        f"--kubernetes_namespace={spec.namespace}",
        f"--service_account_name={spec.pipeline_account}",
        f"--step_pod_service_account_name={spec.pipeline_account}",
        *(f"--{k}={v}" for k, v in spec.orchestrator_settings.items()),
    ]
    operator = [
        "step-operator",
        "register",
        spec.step_operator,
        "--flavor=kubernetes_job",
        f"--namespace={spec.namespace}",
        f"--service_account_name={spec.step_account}",
        *(f"--{k}={v}" for k, v in spec.operator_settings.items()),
    ]
    return [
        [
            "secret",
            "create",
            secret,
            f"--aws_access_key_id={services.access_key}",
            f"--aws_secret_access_key={services.secret_key}",
        ],
        [
            "artifact-store",
            "register",
            spec.name("s3"),
            "--flavor=s3",
            f"--path=s3://{services.bucket}/{spec.prefix}",
            f"--authentication_secret={secret}",
            "--client_kwargs="
            + _json({"endpoint_url": services.s3_endpoint, "region_name": services.region}),
        ],
        [
            "container-registry",
            "register",
            spec.name("registry"),
            "--flavor=default",
            "--uri=registry.k8s-step-operator.example",
        ],
        ["image-builder", "register", spec.name("builder"), "--flavor=local"],
        orchestrator,
        ["step-operator", "flavor", "register", FLAVOR_SOURCE],
        operator,
        [
            "stack",
            "register",
            spec.stack,
            "-o",
            spec.name("orchestrator"),
            "-a",
            spec.name("s3"),
            "-s",
            spec.step_operator,
            "-c",
            spec.name("registry"),
            "-i",
            spec.name("builder"),
            "--set",
        ],
    ]


def local_spec(
    namespace: str,
    *,
    pipeline_account: str,
    step_account: str,
    kube_context: str,
    prefix: str,
    stack: str = "k8s-prod",
) -> StackSpec:
    """The stack on the local cluster: every pod on the real node, the chart's accounts."""
    placement = real_node_pod_settings()
    return StackSpec(
        namespace=namespace,
        pipeline_account=pipeline_account,
        step_account=step_account,
        kube_context=kube_context,
        prefix=prefix,
        stack=stack,
        operator_settings={
            # The real node is labelled as an H100 node by GPU feature discovery would be.
            "gpu_type": "NVIDIA-H100-80GB-HBM3",
            "node_selector": _json(REAL_NODE_SELECTOR),
            "tolerations": _json(REAL_NODE_TOLERATIONS),
            "image_pull_policy": "IfNotPresent",
            "pending_timeout": "120",
        },
        orchestrator_settings={
            "pod_settings": _json(placement),
            "orchestrator_pod_settings": _json(placement),
        },
    )


def zenmls_operator(spec: StackSpec) -> tuple[str, list[list[str]]]:
    """ZenML's own kubernetes step operator, and a stack that differs from ``spec``'s only in it.

    Returns:
        The stack's name and the ``zenml`` commands that register both (the stack not set).
    """
    operator = spec.name("zenml-k8s")
    stack = spec.stack + "-zenml-op"
    return stack, [
        [
            "step-operator",
            "register",
            operator,
            "--flavor=kubernetes",
            f"--kubernetes_namespace={spec.namespace}",
            f"--service_account_name={spec.step_account}",
            # Its submit runs in ZenML's step pods, which have no kubeconfig.
            "--incluster=true",
        ],
        [
            "stack",
            "register",
            stack,
            "-o",
            spec.name("orchestrator"),
            "-a",
            spec.name("s3"),
            "-s",
            operator,
            "-c",
            spec.name("registry"),
            "-i",
            spec.name("builder"),
        ],
    ]


# -- the local cluster's services ---------------------------------------------------------------


def _endpoint(core: Any, service: str) -> str:
    """``address:port`` of the Service's EndpointSlice: the pod network's gateway."""
    from kubernetes import client as k8s

    discovery = k8s.DiscoveryV1Api(core.api_client)
    slices = discovery.list_namespaced_endpoint_slice(
        SERVICES_NAMESPACE, label_selector=f"kubernetes.io/service-name={service}"
    ).items
    for s in slices:
        for endpoint in s.endpoints or []:
            for port in s.ports or []:
                return f"{endpoint.addresses[0]}:{port.port}"
    raise SystemExit(
        f"the Service {SERVICES_NAMESPACE}/{service} has no endpoint: run `make stack-services`"
    )


def local_services(kubeconfig: str, state: Path) -> Services:
    """The local cluster's ZenML server and object store (``make stack-services``).

    Their addresses are the gateway's, which pods reach (the Services' endpoints) and the host
    reaches too (the address is the pod bridge's, on this machine).
    """
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    try:
        info = json.loads(state.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{state}: {e} (run `make stack-services`)") from e
    api = k8s_config.new_client_from_config(config_file=kubeconfig)
    try:
        core = k8s.CoreV1Api(api)
        zenml_at, s3_at = _endpoint(core, "zenml"), _endpoint(core, "seaweedfs")
    finally:
        api.close()
    s3, zenml = info["s3"], info["zenml"]
    return Services(
        zenml_url=f"http://{zenml_at}",
        api_key=zenml["api_key"],
        s3_endpoint=f"http://{s3_at}",
        bucket=s3["bucket"],
        access_key=s3["aws_access_key_id"],
        secret_key=s3["aws_secret_access_key"],
        region=s3.get("region", "us-east-1"),
    )


def client_env(
    services: Services, config: Path, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a ZenML client of the server, with its own configuration directory.

    ``ZENML_STORE_URL`` and ``ZENML_STORE_API_KEY`` are ZenML's own way to log in with a
    service account's API key (what ``zenml login <url> --api-key`` stores).
    """
    env = {k: v for k, v in (base or os.environ).items() if not k.startswith("ZENML_")}
    env.update(QUIET)
    env.update(
        ZENML_CONFIG_PATH=str(config),
        ZENML_STORE_URL=services.zenml_url,
        ZENML_STORE_API_KEY=services.api_key,
    )
    return env


def run_zenml(
    zenml: str,
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    show: bool = True,
    hide: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``zenml ARGS``, printing it first (``hide``: values shown as ``***``)."""
    if show:
        shown = shlex.join(["zenml", *args])
        for secret in hide:
            shown = shown.replace(secret, "***")
        print("$ " + shown, flush=True)
    return subprocess.run(
        [zenml, *args], env=dict(env), cwd=cwd, capture_output=True, text=True, check=False
    )


def already_there(args: Sequence[str], done: subprocess.CompletedProcess[str]) -> bool:
    """Whether a failed registration failed only because the flavor is registered already.

    A flavor is registered once per ZenML server; every stack registered after the first finds
    it there.
    """
    text = done.stdout + done.stderr
    return (
        done.returncode != 0
        and list(args[:3]) == ["step-operator", "flavor", "register"]
        and "existing flavor with the same name" in text
    )
