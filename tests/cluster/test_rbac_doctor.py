"""``doctor`` on the cluster: as the chart's ServiceAccount it reports ok; as an account whose Role
lacks one verb it names exactly that verb; as an admin it reads Pod Security and GPU quota.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from kubernetes import client as k8s

from k8s_step_operator._doctor import command
from k8s_step_operator._doctor.gpus import is_gpu_resource
from k8s_step_operator._doctor.permissions import OPERATOR_PERMISSIONS
from k8s_step_operator._doctor.probe import run_doctor
from k8s_step_operator._doctor.report import PodSecurity, format_report
from k8s_step_operator.cli import main as cli_main
from tests.cluster.conftest import request_token, service_account_client

if TYPE_CHECKING:
    from tests.cluster.conftest import InstallChart, OperatorIdentity

pytestmark = pytest.mark.cluster
KUEUE = "kueue.x-k8s.io"


def admin_gpu_nodes(api_client: Any) -> set[str]:
    nodes = k8s.CoreV1Api(api_client).list_node().items
    return {
        n.metadata.name
        for n in nodes
        if any(is_gpu_resource(k) for k in (n.status.allocatable or {}))
    }


def kueue_served(api_client: Any) -> bool:
    groups = k8s.ApisApi(api_client).get_api_versions().groups or ()
    return any(g.name == "kueue.x-k8s.io" for g in groups)


def make_account_without_pods_log(api_client: Any, namespace: str) -> str:
    """A ServiceAccount whose Role is the chart's minus ``get pods/log``."""
    name = "no-logs"
    core = k8s.CoreV1Api(api_client)
    rbac = k8s.RbacAuthorizationV1Api(api_client)
    core.create_namespaced_service_account(
        namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name))
    )
    rules = [
        k8s.V1PolicyRule(api_groups=[p.group], resources=[p.resource], verbs=[p.verb])
        for p in OPERATOR_PERMISSIONS
        if not p.subresource
    ]
    rbac.create_namespaced_role(
        namespace, k8s.V1Role(metadata=k8s.V1ObjectMeta(name=name), rules=rules)
    )
    rbac.create_namespaced_role_binding(
        namespace,
        k8s.V1RoleBinding(
            metadata=k8s.V1ObjectMeta(name=name),
            role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=name),
            subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name=name, namespace=namespace)],
        ),
    )
    return name


def test_doctor_as_chart_account_is_ok(operator_sa: OperatorIdentity, api_client: Any) -> None:
    report = run_doctor(operator_sa.api_client, operator_sa.namespace)
    assert report.ok, format_report(report)
    assert report.missing == ()
    # Kueue's permissions may show as optional when some test installed its CRDs; nodes may not.
    assert not [p for p in report.missing_optional if p.resource == "nodes"]
    # The inventory is what the cluster has: every node with a GPU resource, by name.
    assert {n.name for n in report.gpu_nodes} == admin_gpu_nodes(api_client)
    assert report.node_count == len(k8s.CoreV1Api(api_client).list_node().items)
    # Least privilege: the namespace and its quotas are not readable, and the report says so.
    assert report.pod_security is None and report.gpu_quotas is None
    assert any("Pod Security level unknown" in n for n in report.notes)
    assert any("GPU quota unknown" in n for n in report.notes)
    # Kueue is looked at whenever its API is served; the section says what was found.
    assert report.kueue is not None
    if kueue_served(api_client):
        assert report.kueue.status in ("ok", "not readable")
    else:
        assert report.kueue.status == "not installed"
        assert "Kueue: not installed (the API server does not serve kueue.x-k8s.io)" in (
            format_report(report)
        )


def test_doctor_names_exactly_the_missing_pods_log(namespace: str, api_client: Any) -> None:
    account = make_account_without_pods_log(api_client, namespace)
    token = request_token(api_client, namespace, account)
    with service_account_client(api_client, token) as client:
        report = run_doctor(client, namespace)
    assert not report.ok
    assert [p.describe(namespace) for p in report.missing] == [
        f"get pods/log in namespace {namespace}"
    ]
    # No ClusterRoleBinding nor kube-system Role: nodes, NodePools and the cluster autoscaler's
    # status are warnings, and the inventory is skipped. (Kueue's permissions are optional ones
    # too when the cluster serves Kueue.)
    missing = {p.resource for p in report.missing_optional if not p.group.endswith(KUEUE)}
    assert missing == {"nodes", "nodepools", "configmaps"}
    assert report.node_count is None
    text = format_report(report)
    assert text.splitlines()[-1] == f"NOT OK: get pods/log in namespace {namespace}"


def test_doctor_without_node_reader_warns_only(install_chart: InstallChart, namespace: str) -> None:
    sa = install_chart(namespace, {"pipeline": {"rbac": {"nodeReader": False}}})
    report = run_doctor(sa.api_client, namespace)
    assert report.ok
    assert [
        p.describe(namespace) for p in report.missing_optional if not p.group.endswith(KUEUE)
    ] == [
        "get nodes cluster-wide",
        "list nodes cluster-wide",
        "watch nodes cluster-wide",
        "get nodepools.karpenter.sh cluster-wide",
        "list nodepools.karpenter.sh cluster-wide",
        "watch nodepools.karpenter.sh cluster-wide",
    ]
    assert any("GPU inventory skipped" in n for n in report.notes)


def test_doctor_requires_kueue_permissions_when_asked(
    install_chart: InstallChart, namespace: str
) -> None:
    without = install_chart(namespace)
    report = run_doctor(without.api_client, namespace, kueue=True)
    assert [p.describe(namespace) for p in report.missing] == [
        f"{verb} workloads.kueue.x-k8s.io in namespace {namespace}"
        for verb in ("get", "list", "watch")
    ] + [f"{verb} localqueues.kueue.x-k8s.io in namespace {namespace}" for verb in ("get", "list")]
    with_kueue = install_chart(namespace, {"kueue": {"enabled": True}}, suffix="kueue")
    assert run_doctor(with_kueue.api_client, namespace, kueue=True).ok


def test_doctor_as_admin_reads_pod_security_and_gpu_quota(
    install_chart: InstallChart, namespace: str, api_client: Any
) -> None:
    install_chart(
        namespace, {"resourceQuota": {"enabled": True, "hard": {"requests.nvidia.com/gpu": "4"}}}
    )
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "baseline",
    }
    k8s.CoreV1Api(api_client).patch_namespace(namespace, {"metadata": {"labels": labels}})
    report = run_doctor(api_client, namespace)
    assert report.ok
    assert report.pod_security == PodSecurity("restricted", "latest", "", "baseline")
    assert report.gpu_quotas is not None
    assert [(q.resource, q.hard) for q in report.gpu_quotas] == [("requests.nvidia.com/gpu", "4")]


def test_doctor_reports_a_missing_namespace(api_client: Any) -> None:
    report = run_doctor(api_client, "no-such-namespace-k8sso")
    assert not report.ok
    assert report.problems == ("namespace no-such-namespace-k8sso does not exist",)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="k8s-step-operator")
    command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["doctor", *argv])
    return int(args.func(args))


def test_doctor_cli_exit_codes_with_impersonation(
    operator_sa: OperatorIdentity,
    kubeconfig_path: Any,
    api_client: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ns = operator_sa.namespace
    base = ["--kubeconfig", str(kubeconfig_path), "--namespace", ns]
    chart_user = f"system:serviceaccount:{ns}:{operator_sa.service_account}"
    assert _cli([*base, "--as", chart_user]) == 0
    assert "OK: every required permission is granted" in capsys.readouterr().out

    account = make_account_without_pods_log(api_client, ns)
    assert _cli([*base, "--as", f"system:serviceaccount:{ns}:{account}"]) == 1
    out = capsys.readouterr().out
    assert f"MISSING get pods/log in namespace {ns}" in out
    assert out.count("MISSING") == 1

    assert _cli([*base, "--as", chart_user, "--json"]) == 0
    assert '"ok": true' in capsys.readouterr().out


def test_doctor_cli_namespace_from_the_context_and_json(
    kubeconfig_path: Any, namespace: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # A kubeconfig whose context names the test's namespace: doctor checks it without -n.
    config = yaml.safe_load(kubeconfig_path.read_text())
    current = config["current-context"]
    for ctx in config["contexts"]:
        if ctx["name"] == current:
            ctx["context"]["namespace"] = namespace
    scoped = tmp_path / "kubeconfig"
    scoped.write_text(yaml.safe_dump(config))
    code = cli_main(["doctor", "--kubeconfig", str(scoped), "-o", "json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert report["namespace"] == namespace and report["ok"] is True
    assert cli_main(["doctor", "--kubeconfig", str(scoped), "-n", "default"]) == 0
    assert capsys.readouterr().out.startswith("Namespace default\n")
