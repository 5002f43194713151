"""Least privilege, proven on the cluster: the chart's pipeline ServiceAccount can do exactly what
the step operator needs (Jobs, pods, logs, events, creating the Secret of a step's secret
environment values and the headless Service of a step's ranks, read-only nodes) and is refused
everything else that matters (reading or changing secrets and services, pods/exec, pod creation,
other namespaces, nodes when switched off).

Every request below is a real request as the ServiceAccount; a 404 or 400 (not 403) proves the
request got past authorization when no object of that name exists.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from tests.cluster.conftest import request_token, service_account_client

if TYPE_CHECKING:
    from tests.cluster.conftest import InstallChart, OperatorIdentity

pytestmark = pytest.mark.cluster

OPERATOR_RULES = {("batch", "jobs", v) for v in ("create", "get", "list", "watch", "delete")} | {
    ("", "pods", "get"),
    ("", "pods", "list"),
    ("", "pods", "watch"),
    ("", "pods/log", "get"),
    ("", "events", "get"),
    ("", "events", "list"),
    ("", "events", "watch"),
    ("", "secrets", "create"),
    ("", "services", "create"),
}
NODE_RULES = {("", "nodes", v) for v in ("get", "list", "watch")} | {
    ("karpenter.sh", "nodepools", v) for v in ("get", "list", "watch")
}
# Granted to every authenticated user by the default system:basic-user role.
SELF_REVIEWS = {
    ("authorization.k8s.io", "selfsubjectaccessreviews", "create"),
    ("authorization.k8s.io", "selfsubjectrulesreviews", "create"),
    ("authentication.k8s.io", "selfsubjectreviews", "create"),
}


def status_of(fn: Any, *args: Any, **kwargs: Any) -> int:
    """The HTTP status of a call: 200 when it returns, the error's status otherwise."""
    try:
        fn(*args, **kwargs)
    except ApiException as e:
        return int(e.status)
    return 200


def step_job(name: str, service_account: str) -> k8s.V1Job:
    """A small Job that passes Pod Security "restricted", run as the step pods' account."""
    container = k8s.V1Container(
        name="step",
        image="busybox:1.36",
        command=["true"],
        resources=k8s.V1ResourceRequirements(
            requests={"cpu": "100m", "memory": "64Mi"}, limits={"memory": "64Mi"}
        ),
        security_context=k8s.V1SecurityContext(
            allow_privilege_escalation=False,
            run_as_non_root=True,
            run_as_user=1000,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
    )
    pod = k8s.V1PodSpec(
        restart_policy="Never",
        service_account_name=service_account,
        automount_service_account_token=False,
        containers=[container],
    )
    return k8s.V1Job(
        metadata=k8s.V1ObjectMeta(name=name),
        spec=k8s.V1JobSpec(
            backoff_limit=0,
            ttl_seconds_after_finished=300,
            template=k8s.V1PodTemplateSpec(spec=pod),
        ),
    )


def wait_for_pod(core: k8s.CoreV1Api, namespace: str, job_uid: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    selector = f"batch.kubernetes.io/controller-uid={job_uid}"
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        if pods:
            return str(pods[0].metadata.name)
        time.sleep(0.2)
    pytest.fail(f"the Job controller made no pod for job uid {job_uid} in {timeout} s")


def test_pipeline_can_run_watch_and_delete_jobs(operator_sa: OperatorIdentity) -> None:
    ns = operator_sa.namespace
    batch = k8s.BatchV1Api(operator_sa.api_client)
    core = k8s.CoreV1Api(operator_sa.api_client)
    name = f"rbac-{uuid.uuid4().hex[:6]}"

    created = batch.create_namespaced_job(ns, step_job(name, operator_sa.step_service_account))
    assert batch.read_namespaced_job(name, ns).metadata.uid == created.metadata.uid
    listed = batch.list_namespaced_job(ns)
    assert name in [j.metadata.name for j in listed.items]

    seen = []
    for event in watch.Watch().stream(
        batch.list_namespaced_job,
        ns,
        resource_version="0",
        timeout_seconds=5,
        _request_timeout=10,
    ):
        seen.append(event["object"].metadata.name)
        if name in seen:
            break
    assert name in seen

    pod = wait_for_pod(core, ns, created.metadata.uid)
    assert core.read_namespaced_pod(pod, ns).metadata.name == pod
    assert pod in [p.metadata.name for p in core.list_namespaced_pod(ns).items]
    pod_events = watch.Watch().stream(core.list_namespaced_pod, ns, timeout_seconds=1)
    assert any(e["object"].metadata.name == pod for e in pod_events)
    # Authorized: the answer is the log (200) or "container not started" (400), never 403.
    assert status_of(core.read_namespaced_pod_log, pod, ns) in (200, 400)
    assert status_of(core.read_namespaced_pod_log, "no-such-pod", ns) == 404

    assert status_of(core.list_namespaced_event, ns) == 200
    assert status_of(core.read_namespaced_event, "no-such-event", ns) == 404
    events = watch.Watch().stream(core.list_namespaced_event, ns, timeout_seconds=1)
    assert isinstance(list(events), list)

    batch.delete_namespaced_job(name, ns, propagation_policy="Background")
    deadline = time.monotonic() + 30
    while status_of(batch.read_namespaced_job, name, ns) != 404:
        assert time.monotonic() < deadline, "the Job was not deleted"
        time.sleep(0.2)


def test_pipeline_reads_nodes_when_node_reader_is_on(operator_sa: OperatorIdentity) -> None:
    core = k8s.CoreV1Api(operator_sa.api_client)
    nodes = core.list_node().items
    assert nodes, "the cluster has nodes; the ServiceAccount must see them"
    assert core.read_node(nodes[0].metadata.name).metadata.name == nodes[0].metadata.name
    stream = watch.Watch().stream(core.list_node, timeout_seconds=1)
    assert any(e["type"] == "ADDED" for e in stream)


def test_pipeline_creates_secrets_but_never_reads_or_changes_them(
    operator_sa: OperatorIdentity, api_client: k8s.ApiClient
) -> None:
    """The one Secret verb: create (a step's secret environment values); nothing else."""
    ns = operator_sa.namespace
    core = k8s.CoreV1Api(operator_sa.api_client)
    secret = k8s.V1Secret(
        metadata=k8s.V1ObjectMeta(name="step-env"), string_data={"ZENML_STORE_API_TOKEN": "t"}
    )
    assert core.create_namespaced_secret(ns, secret).metadata.name == "step-env"
    assert status_of(core.read_namespaced_secret, "step-env", ns) == 403
    assert status_of(core.list_namespaced_secret, ns) == 403
    assert status_of(lambda: list(watch.Watch().stream(core.list_namespaced_secret, ns))) == 403
    patch = {"metadata": {"labels": {"x": "y"}}}
    assert status_of(core.patch_namespaced_secret, "step-env", ns, patch) == 403
    assert status_of(core.replace_namespaced_secret, "step-env", ns, secret) == 403
    assert status_of(core.delete_namespaced_secret, "step-env", ns) == 403
    assert status_of(core.delete_collection_namespaced_secret, ns) == 403
    # The admin sees it unchanged.
    kept = k8s.CoreV1Api(api_client).read_namespaced_secret("step-env", ns)
    assert kept.metadata.labels is None
    # Only in the steps' namespace.
    assert status_of(core.create_namespaced_secret, "default", secret) == 403


def test_pipeline_creates_services_but_never_reads_or_changes_them(
    operator_sa: OperatorIdentity, api_client: k8s.ApiClient
) -> None:
    """The one Service verb: create (the headless Service of a step's ranks); nothing else."""
    ns = operator_sa.namespace
    core = k8s.CoreV1Api(operator_sa.api_client)
    service = k8s.V1Service(
        metadata=k8s.V1ObjectMeta(name="ranks"),
        spec=k8s.V1ServiceSpec(cluster_ip="None", selector={"app": "x"}),
    )
    assert core.create_namespaced_service(ns, service).metadata.name == "ranks"
    assert status_of(core.read_namespaced_service, "ranks", ns) == 403
    assert status_of(core.list_namespaced_service, ns) == 403
    patch = {"metadata": {"labels": {"x": "y"}}}
    assert status_of(core.patch_namespaced_service, "ranks", ns, patch) == 403
    assert status_of(core.delete_namespaced_service, "ranks", ns) == 403
    kept = k8s.CoreV1Api(api_client).read_namespaced_service("ranks", ns)
    assert kept.metadata.labels is None
    assert status_of(core.create_namespaced_service, "default", service) == 403


def test_pipeline_is_refused_secrets_exec_and_pod_writes(operator_sa: OperatorIdentity) -> None:
    ns = operator_sa.namespace
    core = k8s.CoreV1Api(operator_sa.api_client)
    assert status_of(core.list_namespaced_secret, ns) == 403
    assert status_of(core.read_namespaced_secret, "any", ns) == 403
    assert status_of(core.list_secret_for_all_namespaces) == 403

    # pods/exec without the stream wrapper is a plain POST: authorized (as "create pods/exec")
    # before the apiserver looks for an upgrade, so 403 here, where an admin gets 400 or 404.
    exec_status = status_of(
        core.connect_post_namespaced_pod_exec, "any", ns, command=["true"], stdout=True
    )
    assert exec_status == 403

    pod = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="direct"),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="c", image="busybox:1.36")]),
    )
    assert status_of(core.create_namespaced_pod, ns, pod) == 403
    assert status_of(core.delete_namespaced_pod, "any", ns) == 403
    assert status_of(core.list_namespaced_config_map, ns) == 403
    assert status_of(core.list_namespaced_service_account, ns) == 403


def test_pipeline_is_confined_to_its_namespace(operator_sa: OperatorIdentity) -> None:
    batch = k8s.BatchV1Api(operator_sa.api_client)
    core = k8s.CoreV1Api(operator_sa.api_client)
    other = "default"
    assert status_of(batch.list_namespaced_job, other) == 403
    assert status_of(batch.read_namespaced_job, "any", other) == 403
    job = step_job("escape", operator_sa.step_service_account)
    assert status_of(batch.create_namespaced_job, other, job) == 403
    assert status_of(batch.list_job_for_all_namespaces) == 403
    assert status_of(core.list_namespaced_pod, other) == 403
    assert status_of(core.read_namespaced_pod_log, "any", other) == 403


def _rules(api_client: k8s.ApiClient, namespace: str) -> set[tuple[str, str, str]]:
    review = k8s.V1SelfSubjectRulesReview(
        spec=k8s.V1SelfSubjectRulesReviewSpec(namespace=namespace)
    )
    status = k8s.AuthorizationV1Api(api_client).create_self_subject_rules_review(review).status
    assert not status.incomplete, status.evaluation_error
    return {
        (group, resource, verb)
        for rule in status.resource_rules
        for group in rule.api_groups or [""]
        for resource in rule.resources or []
        for verb in rule.verbs
    }


def test_pipeline_has_nothing_else(operator_sa: OperatorIdentity) -> None:
    """The server's own list of what the account may do equals the operator's needs."""
    rules = _rules(operator_sa.api_client, operator_sa.namespace) - SELF_REVIEWS
    assert rules == OPERATOR_RULES | NODE_RULES


def test_only_the_cluster_autoscalers_status_is_readable_in_kube_system(
    operator_sa: OperatorIdentity,
) -> None:
    core = k8s.CoreV1Api(operator_sa.api_client)
    # Allowed (absent here: no cluster autoscaler runs in the local cluster), and nothing else.
    status = status_of(core.read_namespaced_config_map, "cluster-autoscaler-status", "kube-system")
    assert status == 404
    assert status_of(core.read_namespaced_config_map, "kube-root-ca.crt", "kube-system") == 403
    assert status_of(core.list_namespaced_config_map, "kube-system") == 403
    assert status_of(core.list_namespaced_secret, "kube-system") == 403


def test_node_reader_off_refuses_nodes(install_chart: InstallChart, namespace: str) -> None:
    sa = install_chart(namespace, {"pipeline": {"rbac": {"nodeReader": False}}})
    core = k8s.CoreV1Api(sa.api_client)
    assert status_of(core.list_node) == 403
    assert status_of(core.read_node, "any") == 403
    # The namespaced permissions are unchanged.
    assert status_of(k8s.BatchV1Api(sa.api_client).list_namespaced_job, namespace) == 200
    assert _rules(sa.api_client, namespace) - SELF_REVIEWS == OPERATOR_RULES


def test_kueue_rule_only_when_enabled(install_chart: InstallChart, namespace: str) -> None:
    sa = install_chart(namespace, {"kueue": {"enabled": True}})
    rules = _rules(sa.api_client, namespace) - SELF_REVIEWS
    kueue = (
        {("kueue.x-k8s.io", "workloads", v) for v in ("get", "list", "watch")}
        | {
            ("kueue.x-k8s.io", "localqueues", "get"),
            ("kueue.x-k8s.io", "localqueues", "list"),
            ("visibility.kueue.x-k8s.io", "localqueues/pendingworkloads", "get"),
        }
        | {("kueue.x-k8s.io", "clusterqueues", v) for v in ("get", "list", "watch")}
    )
    assert rules == OPERATOR_RULES | NODE_RULES | kueue


def test_step_pods_account_has_no_token(operator_sa: OperatorIdentity, api_client: Any) -> None:
    account = k8s.CoreV1Api(api_client).read_namespaced_service_account(
        operator_sa.step_service_account, operator_sa.namespace
    )
    assert account.automount_service_account_token is False
    bindings = k8s.RbacAuthorizationV1Api(api_client).list_namespaced_role_binding(
        operator_sa.namespace
    )
    subjects = {s.name for b in bindings.items for s in b.subjects or []}
    assert operator_sa.step_service_account not in subjects
    # Even with a token, the step pods' account may do nothing at all.
    token = request_token(api_client, operator_sa.namespace, operator_sa.step_service_account)
    with service_account_client(api_client, token) as step:
        assert _rules(step, operator_sa.namespace) - SELF_REVIEWS == set()
        assert status_of(k8s.BatchV1Api(step).list_namespaced_job, operator_sa.namespace) == 403
