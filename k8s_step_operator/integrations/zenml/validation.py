"""The stack check: a stack that cannot work is refused before any Job is created.

ZenML runs it when a pipeline is submitted (``Stack.validate``), before anything is sent to the
cluster, and shows the message as the reason. A refusal is one message that names this
component and says, for each problem, what would work. What is checked:

* the step pods must reach ZenML's stores: a ZenML server (not a local store) and a remote
  artifact store, or local mode (this machine's local stores on a PersistentVolumeClaim);
  local mode cannot serve a remote orchestrator, whose pods do not share this machine's files;
* the addresses the pods get must be reachable from a pod: not this machine's loopback, and a
  cluster Service name (``<service>.<namespace>.svc``) must name a Service that exists; that
  holds for the ZenML server's URL the pods get and for the artifact store's S3 endpoint;
* the identity this operator runs as must have the RBAC it needs in the steps' namespace: the
  ServiceAccount of ZenML's step pods under ZenML's ``kubernetes`` orchestrator, else the
  kubeconfig's user.

This module is pure: ``StackFacts`` carries what was looked up (``probe.py`` looks it up).
A stack that passes works as it is: with a ZenML server the pods reach the server (the API
token the run gets travels in the Job's own Secret), and in local mode they share this machine's
local stores through a PersistentVolumeClaim.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["ClusterService", "StackFacts", "check_stack", "cluster_service", "is_loopback"]

# `<service>.<namespace>.svc`, optionally followed by the cluster domain.
_SERVICE_HOST = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.svc(\..*)?$"
)


@dataclass(frozen=True)
class ClusterService:
    """A Service a URL names by its cluster DNS name."""

    name: str
    namespace: str


def host_of(url: str) -> str:
    """The host of ``url`` (lower case, without brackets), ``""`` when it has none."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def is_loopback(url: str) -> bool:
    """Whether ``url`` points at this machine's loopback (which, in a pod, is the pod's own)."""
    host = host_of(url)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def cluster_service(url: str) -> ClusterService | None:
    """The Service ``url`` names (``http://zenml.ml.svc.cluster.local:8080``), if it names one."""
    m = _SERVICE_HOST.match(host_of(url))
    return ClusterService(m.group(1), m.group(3)) if m else None


@dataclass(frozen=True)
class StackFacts:
    """What the check needs to know about the stack, the cluster and this machine.

    Attributes:
        component: The step operator's component name.
        local: Whether the component is in local mode.
        claim: Its ``local_stores_claim``.
        restricted: Whether its steps run under the "restricted" Pod Security profile.
        run_as_user: Its ``run_as_user`` setting.
        uid: This process's UID (local mode runs the pods as it by default).
        store_is_local: Whether the ZenML store is local (a SQLite file, or a local server).
        store_url: The store's URL, as this machine uses it.
        artifact_store: The artifact store's component name.
        artifact_store_is_local: Whether the artifact store is a local directory.
        stores_path: The directory of ZenML's local stores on this machine.
        orchestrator: The orchestrator's component name.
        orchestrator_flavor: Its flavor (``local``, ``kubernetes``...).
        orchestrator_is_remote: Whether it runs steps away from this machine.
        pod_store_url: The ZenML server's URL as the pods get it, when it differs from
            ``store_url`` (the orchestrator's pods set ``ZENML_STORE_URL``).
        artifact_store_endpoint: The artifact store's endpoint (S3 ``endpoint_url``), if any.
        missing_services: The Services the URLs name that the cluster does not have, by URL.
        identity: Who this operator acts as where it runs (``ServiceAccount ml/pipeline`` or
            ``the kubeconfig's user``); ``""`` when it could not be checked.
        namespace: The namespace the step Jobs go to.
        missing_permissions: What that identity may not do there (``create jobs.batch``...).
    """

    component: str
    local: bool
    claim: str | None
    restricted: bool
    run_as_user: int | None
    uid: int
    store_is_local: bool
    store_url: str
    artifact_store: str
    artifact_store_is_local: bool
    stores_path: str
    orchestrator: str = "default"
    orchestrator_flavor: str = "local"
    orchestrator_is_remote: bool = False
    pod_store_url: str = ""
    artifact_store_endpoint: str | None = None
    missing_services: Mapping[str, ClusterService] = field(default_factory=dict)
    identity: str = ""
    namespace: str = ""
    missing_permissions: tuple[str, ...] = ()


def check_stack(facts: StackFacts) -> tuple[bool, str]:
    """``(True, "")`` when the step pods can work with this stack, else ``(False, why)``."""
    name = facts.component
    if facts.local:
        return _check_local(facts)
    problems: list[str] = []
    stores: list[str] = []
    if facts.store_is_local:
        stores.append(f"the ZenML store is local ({facts.store_url})")
    if facts.artifact_store_is_local:
        stores.append(f"the artifact store '{facts.artifact_store}' is a local directory")
    if stores:
        problems.append(
            f"{' and '.join(stores)}, which those pods cannot reach: either connect to a ZenML "
            "server the pods can reach (`zenml login <url>`) and use a remote artifact store "
            "(`zenml artifact-store register NAME --flavor=s3 --path=s3://BUCKET`), or, if the "
            f"cluster's pods can mount {facts.stores_path} through a PersistentVolumeClaim at "
            f"the same path and the orchestrator runs on this machine, use local mode: `zenml "
            f"step-operator update {name} --local=true --local_stores_claim=<claim>`"
        )
    pod_url = facts.pod_store_url or facts.store_url
    if not facts.store_is_local:
        problems += _address(
            facts,
            pod_url,
            f"the ZenML server's URL the pods get, {pod_url},",
            "log in to the server at an address pods reach (`zenml login "
            "https://zenml.example.com`), or, where the orchestrator's pods may use another "
            "address than this machine, give it to them (orchestrator_pod_settings env "
            "ZENML_STORE_URL)",
        )
    if facts.artifact_store_endpoint and not facts.artifact_store_is_local:
        problems += _address(
            facts,
            facts.artifact_store_endpoint,
            f"the artifact store '{facts.artifact_store}''s endpoint "
            f"{facts.artifact_store_endpoint}",
            "register the object store at an address pods reach (`zenml artifact-store update "
            f'{facts.artifact_store} --client_kwargs=\'{{"endpoint_url": "http://<service>.'
            "<namespace>.svc.cluster.local:<port>\"}}'`)",
        )
    if facts.missing_permissions:
        missing = ", ".join(facts.missing_permissions)
        problems.append(
            f"{facts.identity} may not {missing} in namespace {facts.namespace}, which the "
            "step operator needs: install the chart (`helm install k8s-step-operator "
            f"charts/k8s-step-operator -n {facts.namespace}`) and run as its pipeline "
            "ServiceAccount (under ZenML's kubernetes orchestrator: `zenml orchestrator update "
            "<orchestrator> --step_pod_service_account_name=<release>-k8s-step-operator-"
            "pipeline`), or grant the chart's pipeline Role to that identity"
        )
    if not problems:
        return True, ""
    return False, (
        f"step operator '{name}' runs steps in pods on a Kubernetes cluster, but "
        + "; and ".join(problems)
        + "."
    )


def _address(facts: StackFacts, url: str, what: str, instead: str) -> list[str]:
    if is_loopback(url):
        return [
            f"{what} is this machine's loopback address, which in a pod is the pod itself: "
            f"{instead}"
        ]
    service = facts.missing_services.get(url)
    if service is not None:
        return [
            f"{what} names the Service {service.name} in namespace {service.namespace}, which "
            f"the cluster does not have, so pods cannot resolve it: create that Service, or "
            f"{instead}"
        ]
    return []


def _check_local(facts: StackFacts) -> tuple[bool, str]:
    name = facts.component
    if facts.orchestrator_is_remote:
        return False, (
            f"step operator '{name}' is in local mode, which shares this machine's local stores "
            f"({facts.stores_path}) with the step pods, but the orchestrator "
            f"'{facts.orchestrator}' ({facts.orchestrator_flavor}) runs the pipeline in pods "
            "that do not have them: either use a ZenML server and a remote artifact store and "
            f"turn local mode off (`zenml step-operator update {name} --local=false`), or run "
            "the pipeline with the local orchestrator."
        )
    if not facts.claim:
        return False, (
            f"step operator '{name}' is in local mode but names no PersistentVolumeClaim: "
            f"create a claim in the steps' namespace whose volume is {facts.stores_path} "
            f"on the node that runs the steps, then run `zenml step-operator update "
            f"{name} --local_stores_claim=<claim>`."
        )
    user = facts.run_as_user if facts.run_as_user is not None else facts.uid
    if facts.restricted and user == 0:
        return False, (
            f"step operator '{name}' in local mode runs its pods as this process's user so "
            f"that they can write {facts.stores_path}, but this process runs as root, "
            "which the 'restricted' Pod Security profile refuses: run ZenML as a non-root "
            f"user who owns {facts.stores_path}, or run `zenml step-operator update {name} "
            "--pod_security_profile=none` where the namespace allows root pods."
        )
    return True, ""
