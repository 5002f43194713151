"""What the stack check looks up: ZenML's components, and the cluster's Services and RBAC.

``stack_facts`` reads the stack ZenML is about to run (the orchestrator, the artifact store, the
store's URL and what the orchestrator's pods get instead) and asks the cluster, through the
component's own cluster access, two things: whether the Services that URLs name exist, and
whether the identity this operator will act as may do what it needs in the steps' namespace
(a ``SubjectAccessReview`` for the ServiceAccount of ZenML's step pods, a
``SelfSubjectAccessReview`` for the kubeconfig's user). A question the cluster does not answer
(no access, no permission to ask) is left out: the check refuses only what it knows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from k8s_step_operator import StepOperatorError
from k8s_step_operator._doctor.permissions import OPERATOR_PERMISSIONS, Permission
from k8s_step_operator._kube.client import load_client
from k8s_step_operator.integrations.zenml.validation import (
    ClusterService,
    StackFacts,
    cluster_service,
)

if TYPE_CHECKING:
    from zenml.stack import Stack

    from k8s_step_operator.integrations.zenml.config import KubernetesJobStepOperatorConfig

__all__ = ["missing_permissions", "missing_services", "pod_store_url", "stack_facts"]

log = logging.getLogger(__name__)

# Every permission the operator needs in the steps' namespace; with a ZenML server, creating
# the Secret that carries the run's API token is one of them.
_NEEDED: tuple[Permission, ...] = tuple(
    p for p in OPERATOR_PERMISSIONS if p.required or p.resource == "secrets"
)
_TIMEOUT = 10


def pod_store_url(orchestrator_config: Any) -> str:
    """``ZENML_STORE_URL`` as ZenML's kubernetes orchestrator's pod settings set it, or ``""``."""
    pod = getattr(orchestrator_config, "orchestrator_pod_settings", None)
    for var in getattr(pod, "env", None) or []:
        if isinstance(var, Mapping) and var.get("name") == "ZENML_STORE_URL" and var.get("value"):
            return str(var["value"])
    return ""


def stack_facts(
    stack: Stack,
    *,
    component: str,
    config: KubernetesJobStepOperatorConfig,
    store_is_local: bool,
    store_url: str,
    stores_path: str,
) -> StackFacts:
    """What ``check_stack`` needs, looked up (the cluster only when it can answer)."""
    orchestrator = stack.orchestrator
    artifact_store = stack.artifact_store
    client_kwargs = getattr(artifact_store.config, "client_kwargs", None) or {}
    endpoint = client_kwargs.get("endpoint_url") if isinstance(client_kwargs, Mapping) else None
    kubernetes_orchestrator = orchestrator.flavor == "kubernetes"
    facts: dict[str, Any] = {
        "component": component,
        "local": config.local,
        "claim": config.local_stores_claim,
        "restricted": config.pod_security_profile == "restricted",
        "run_as_user": config.run_as_user,
        "uid": os.getuid(),
        "store_is_local": store_is_local,
        "store_url": store_url,
        "artifact_store": artifact_store.name,
        "artifact_store_is_local": artifact_store.config.is_local,
        "stores_path": stores_path,
        "orchestrator": orchestrator.name,
        "orchestrator_flavor": orchestrator.flavor,
        "orchestrator_is_remote": orchestrator.config.is_remote,
        "pod_store_url": pod_store_url(orchestrator.config) if kubernetes_orchestrator else "",
        "artifact_store_endpoint": str(endpoint) if endpoint else None,
    }
    if config.local:
        return StackFacts(**facts)
    try:
        loaded = load_client(config.kubeconfig_path, config.kubernetes_context, config.incluster)
    except StepOperatorError as e:
        log.debug("stack check without the cluster (%s)", e)
        return StackFacts(**facts)
    try:
        urls = [facts["pod_store_url"] or store_url, facts["artifact_store_endpoint"]]
        facts["missing_services"] = missing_services(loaded.api_client, [u for u in urls if u])
        if kubernetes_orchestrator:
            o = orchestrator.config
            account = (
                getattr(o, "step_pod_service_account_name", None)
                or getattr(o, "service_account_name", None)
                or "default"
            )
            where = str(getattr(o, "kubernetes_namespace", "") or loaded.namespace)
            namespace = config.namespace or where
            identity = f"the ServiceAccount {where}/{account} of ZenML's step pods"
            subject: tuple[str, str] | None = (where, account)
        else:
            namespace = config.namespace or loaded.namespace
            identity = f"the kubeconfig's user ({loaded.source})"
            subject = None
        missing = missing_permissions(loaded.api_client, namespace, subject)
        if missing is not None:
            facts.update(identity=identity, namespace=namespace, missing_permissions=missing)
    finally:
        loaded.api_client.close()
    return StackFacts(**facts)


def missing_services(api_client: Any, urls: Iterable[str]) -> dict[str, ClusterService]:
    """The URLs that name a cluster Service which does not exist (404), with that Service."""
    from kubernetes import client as k8s
    from kubernetes.client.rest import ApiException

    core = k8s.CoreV1Api(api_client)
    missing: dict[str, ClusterService] = {}
    for url in urls:
        service = cluster_service(url)
        if service is None:
            continue
        try:
            core.read_namespaced_service(service.name, service.namespace, _request_timeout=_TIMEOUT)
        except ApiException as e:
            if e.status == 404:
                missing[url] = service
            else:
                log.debug("cannot tell whether Service %s exists: %s", service, e.status)
        except Exception as e:  # unreachable cluster: the check cannot tell
            log.debug("cannot tell whether Service %s exists: %s", service, e)
    return missing


def missing_permissions(
    api_client: Any, namespace: str, service_account: tuple[str, str] | None
) -> tuple[str, ...] | None:
    """What the identity may not do in ``namespace`` of what the operator needs.

    Args:
        api_client: A client of the cluster.
        namespace: The steps' namespace.
        service_account: ``(namespace, name)`` of the ServiceAccount asked about, or ``None``
            for this client's own identity.

    Returns:
        The missing permissions (``create jobs.batch``...), or ``None`` when the cluster does
        not answer (the client may not ask about others, or is unreachable).
    """
    from kubernetes import client as k8s

    authz = k8s.AuthorizationV1Api(api_client)
    missing: list[str] = []
    for perm in _NEEDED:
        attributes: dict[str, str] = {
            "namespace": namespace,
            "verb": perm.verb,
            "group": perm.group,
            "resource": perm.resource,
        }
        if perm.subresource:
            attributes["subresource"] = perm.subresource
        body: dict[str, Any] = {
            "apiVersion": "authorization.k8s.io/v1",
            "spec": {"resourceAttributes": attributes},
        }
        try:
            if service_account is None:
                body["kind"] = "SelfSubjectAccessReview"
                review = authz.create_self_subject_access_review(body, _request_timeout=_TIMEOUT)
            else:
                ns, name = service_account
                body["kind"] = "SubjectAccessReview"
                body["spec"]["user"] = f"system:serviceaccount:{ns}:{name}"
                body["spec"]["groups"] = [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{ns}",
                    "system:authenticated",
                ]
                review = authz.create_subject_access_review(body, _request_timeout=_TIMEOUT)
        except Exception as e:
            log.debug("cannot review %s: %s", perm.describe(namespace), e)
            return None
        if not review.status.allowed or review.status.denied:
            missing.append(f"{perm.verb} {perm.resource_name}")
    return tuple(missing)
