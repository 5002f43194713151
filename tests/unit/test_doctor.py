"""Units for doctor's pure part: API JSON in, report out; and the CLI's argument handling."""

from __future__ import annotations

import argparse
import ast
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8s_step_operator import ConfigurationError
from k8s_step_operator._doctor import command, probe
from k8s_step_operator._doctor.gpus import is_gpu_resource
from k8s_step_operator._doctor.permissions import (
    AUTOSCALER_PERMISSIONS,
    KUEUE_PERMISSIONS,
    NODE_PERMISSIONS,
    OPERATOR_PERMISSIONS,
    Permission,
)
from k8s_step_operator._doctor.report import (
    AccessCheck,
    DoctorReport,
    PodSecurity,
    QuotaEntry,
    build_report,
    format_report,
)
from k8s_step_operator._job.kube_syntax import DNS_LABEL_RULE, is_dns_label
from k8s_step_operator.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]
NS = "ml"


def checks(denied: set[Permission] = frozenset(), kueue: bool = False) -> list[AccessCheck]:  # type: ignore[assignment]
    perms = [
        *OPERATOR_PERMISSIONS,
        *NODE_PERMISSIONS,
        *AUTOSCALER_PERMISSIONS,
        *(KUEUE_PERMISSIONS if kueue else ()),
    ]
    return [
        AccessCheck(p, p not in denied, "" if p not in denied else "no RBAC rule") for p in perms
    ]


def node(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    capacity: dict[str, str] | None = None,
    allocatable: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    ready: str | None = "True",
    unschedulable: bool = False,
) -> dict[str, Any]:
    conditions = [] if ready is None else [{"type": "Ready", "status": ready}]
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"taints": taints or [], "unschedulable": unschedulable},
        "status": {
            "capacity": {"cpu": "32", "memory": "256Gi", **(capacity or {})},
            "allocatable": {"cpu": "31", "memory": "250Gi", **(allocatable or capacity or {})},
            "conditions": conditions,
        },
    }


def report(**kw: Any) -> DoctorReport:
    args: dict[str, Any] = {"nodes": [], "namespace_obj": None, "quotas": None}
    args.update(kw)
    return build_report(NS, kw.pop("checks", None) or checks(), **args)


PODS_LOG = Permission("get", "pods", subresource="log")


def test_all_granted_is_ok() -> None:
    r = report()
    assert r.ok
    assert r.missing == ()
    assert "OK: every required permission is granted in namespace ml" in format_report(r)


def test_missing_pods_log_is_named_exactly() -> None:
    r = build_report(NS, checks({PODS_LOG}), nodes=[], namespace_obj=None, quotas=None)
    assert not r.ok
    assert [p.describe(NS) for p in r.missing] == ["get pods/log in namespace ml"]
    text = format_report(r)
    assert "MISSING get pods/log in namespace ml" in text
    assert text.splitlines()[-1] == "NOT OK: get pods/log in namespace ml"


def test_missing_nodes_is_a_warning_not_a_failure() -> None:
    r = build_report(NS, checks(set(NODE_PERMISSIONS)), nodes=None, namespace_obj=None, quotas=None)
    assert r.ok
    assert [p.describe(NS) for p in r.missing_optional] == [
        "get nodes cluster-wide",
        "list nodes cluster-wide",
        "watch nodes cluster-wide",
        "get nodepools.karpenter.sh cluster-wide",
        "list nodepools.karpenter.sh cluster-wide",
        "watch nodepools.karpenter.sh cluster-wide",
    ]
    text = format_report(r)
    assert "warning list nodes cluster-wide  (pre-submit fit check" in text
    assert "warning list nodepools.karpenter.sh cluster-wide  (a step no current node fits" in text
    assert "GPU inventory: not available" in text
    assert "6 optional permission(s) missing" in text


def test_kueue_permissions_required_when_asked() -> None:
    denied = {KUEUE_PERMISSIONS[1]}
    r = build_report(NS, checks(denied, kueue=True), nodes=[], namespace_obj=None, quotas=None)
    assert [p.describe(NS) for p in r.missing] == ["list workloads.kueue.x-k8s.io in namespace ml"]


def test_describe_names_group_and_subresource() -> None:
    assert OPERATOR_PERMISSIONS[0].describe("x") == "create jobs.batch in namespace x"
    assert PODS_LOG.resource_name == "pods/log"


def test_gpu_inventory_reads_models_resources_taints() -> None:
    nodes = [
        node("cpu-0"),
        node(
            "h100-0",
            labels={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            capacity={"nvidia.com/gpu": "8"},
            allocatable={"nvidia.com/gpu": "7"},
            taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
        ),
        node(
            "gke-a100",
            labels={"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"},
            capacity={"nvidia.com/mig-1g.5gb": "7"},
            ready="False",
        ),
        node(
            "karp-l4",
            labels={"karpenter.k8s.aws/instance-gpu-name": "l4"},
            capacity={"nvidia.com/gpu": "1"},
            unschedulable=True,
            ready=None,
        ),
        node("mi300", capacity={"amd.com/gpu": "8"}, labels={"amd.com/gpu.product-name": "MI300X"}),
        node("mystery", capacity={"nvidia.com/gpu": "2"}),
    ]
    r = report(nodes=nodes)
    assert r.node_count == 6
    by_name = {n.name: n for n in r.gpu_nodes}
    assert sorted(by_name) == ["gke-a100", "h100-0", "karp-l4", "mi300", "mystery"]
    h100 = by_name["h100-0"]
    assert (h100.model, h100.model_label) == ("NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.product")
    assert h100.capacity == {"nvidia.com/gpu": "8"}
    assert h100.allocatable == {"nvidia.com/gpu": "7"}
    assert h100.taints == ("nvidia.com/gpu=present:NoSchedule",)
    assert h100.ready is True
    assert by_name["gke-a100"].model == "nvidia-tesla-a100"
    assert by_name["gke-a100"].allocatable == {"nvidia.com/mig-1g.5gb": "7"}
    assert by_name["gke-a100"].ready is False
    assert by_name["karp-l4"].model_label == "karpenter.k8s.aws/instance-gpu-name"
    assert by_name["karp-l4"].unschedulable and by_name["karp-l4"].ready is None
    assert by_name["mi300"].model == "MI300X"
    assert by_name["mystery"].model == ""
    text = format_report(r)
    assert "GPU inventory: 5 of 6 nodes" in text
    assert "h100-0: NVIDIA-H100-80GB-HBM3 (from nvidia.com/gpu.product); Ready" in text
    assert "allocatable nvidia.com/gpu=7; capacity nvidia.com/gpu=8" in text
    assert "karp-l4: l4 (from karpenter.k8s.aws/instance-gpu-name); Ready unknown, cordoned" in text
    assert "mystery: model unknown" in text
    assert "taints: nvidia.com/gpu=present:NoSchedule" in text


def test_gpu_model_label_precedence() -> None:
    both = node(
        "n",
        labels={"cloud.google.com/gke-accelerator": "nvidia-l4", "nvidia.com/gpu.product": "L4"},
        capacity={"nvidia.com/gpu": "1"},
    )
    (n,) = report(nodes=[both]).gpu_nodes
    assert n.model_label == "nvidia.com/gpu.product"


def test_no_gpu_nodes_is_noted() -> None:
    r = report(nodes=[node("cpu-0")])
    assert r.gpu_nodes == ()
    assert any("no node advertises a GPU resource" in n for n in r.notes)
    assert r.ok  # a note, not a failure: the cluster may autoscale GPU nodes in


@pytest.mark.parametrize(
    ("key", "gpu"),
    [
        ("nvidia.com/gpu", True),
        ("nvidia.com/mig-3g.40gb", True),
        ("amd.com/gpu", True),
        ("gpu.intel.com/i915", True),
        ("aws.amazon.com/neuroncore", True),
        ("cpu", False),
        ("memory", False),
        ("hugepages-2Mi", False),
        ("example.com/fpga", False),
    ],
)
def test_is_gpu_resource(key: str, gpu: bool) -> None:
    assert is_gpu_resource(key) is gpu


def test_pod_security_labels() -> None:
    ns = {
        "metadata": {
            "name": NS,
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
                "pod-security.kubernetes.io/warn": "restricted",
            },
        }
    }
    r = report(namespace_obj=ns)
    assert r.pod_security == PodSecurity("restricted", "latest", "", "restricted")
    assert "Pod Security: enforce=restricted (latest) audit=not set warn=restricted" in (
        format_report(r)
    )
    assert not any("Pod Security" in n for n in r.notes)


def test_pod_security_weaker_than_restricted_is_noted() -> None:
    ns = {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}
    r = report(namespace_obj=ns)
    assert any("enforces Pod Security 'privileged'" in n for n in r.notes)


def test_pod_security_unset_is_noted() -> None:
    r = report(namespace_obj={"metadata": {"name": NS, "labels": {}}})
    assert r.pod_security == PodSecurity("", "", "", "")
    assert any("no Pod Security enforce label" in n for n in r.notes)
    assert "Pod Security: enforce=not set audit=not set warn=not set" in format_report(r)


def test_pod_security_unknown_when_unreadable() -> None:
    assert "Pod Security: unknown" in format_report(report(namespace_obj=None))


def test_gpu_quota_entries() -> None:
    quotas = [
        {
            "metadata": {"name": "gpus"},
            "spec": {"hard": {"requests.nvidia.com/gpu": "8", "requests.cpu": "64"}},
            "status": {
                "hard": {"requests.nvidia.com/gpu": "8", "requests.cpu": "64"},
                "used": {"requests.nvidia.com/gpu": "3", "requests.cpu": "10"},
            },
        },
        # Not yet seen by the quota controller: no status.
        {"metadata": {"name": "fresh"}, "spec": {"hard": {"requests.amd.com/gpu": "2"}}},
    ]
    r = report(quotas=quotas)
    assert r.gpu_quotas == (
        QuotaEntry("gpus", "requests.nvidia.com/gpu", "8", "3"),
        QuotaEntry("fresh", "requests.amd.com/gpu", "2", "0"),
    )
    text = format_report(r)
    assert "gpus: requests.nvidia.com/gpu used 3 of 8" in text
    assert "GPU quota: none" in format_report(report(quotas=[]))
    assert "GPU quota: unknown" in format_report(report(quotas=None))


def test_problems_fail_the_report() -> None:
    r = report(problems=["namespace ml does not exist"])
    assert not r.ok
    assert format_report(r).splitlines()[-1] == "NOT OK: namespace ml does not exist"


def test_report_is_frozen_and_json_ready() -> None:
    r = build_report(NS, checks({PODS_LOG}), nodes=[], namespace_obj=None, quotas=None)
    with pytest.raises(AttributeError):
        r.namespace = "other"  # type: ignore[misc]
    data = json.loads(json.dumps(r.to_dict()))
    assert data["ok"] is False
    assert data["missing"] == ["get pods/log in namespace ml"]


def _rendered(kind: str) -> list[dict[str, Any]]:
    docs = yaml.safe_load_all((ROOT / "manifests" / "k8s-step-operator.yaml").read_text())
    return [d for d in docs if d and d.get("kind") == kind]


def _grants(obj: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    return {
        (group, resource, verb, name)
        for rule in obj["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames", [""])
    }


def _needs(perms: tuple[Permission, ...]) -> set[tuple[str, str, str, str]]:
    return {
        (p.group, p.resource + (f"/{p.subresource}" if p.subresource else ""), p.verb, p.name)
        for p in perms
    }


def test_chart_role_grants_exactly_what_doctor_checks() -> None:
    roles = {r["metadata"]["namespace"]: r for r in _rendered("Role")}
    assert sorted(roles) == ["k8s-step-operator", "kube-system"]
    assert _grants(roles["k8s-step-operator"]) == _needs(OPERATOR_PERMISSIONS)
    # kube-system: the cluster autoscaler's status ConfigMap and nothing else there.
    assert _grants(roles["kube-system"]) == _needs(AUTOSCALER_PERMISSIONS)
    assert {p.namespace for p in AUTOSCALER_PERMISSIONS} == {"kube-system"}
    (cluster_role,) = _rendered("ClusterRole")
    assert _grants(cluster_role) == _needs(NODE_PERMISSIONS)


def test_a_permission_on_one_object_elsewhere_says_which_and_where() -> None:
    (perm,) = AUTOSCALER_PERMISSIONS
    assert perm.describe("ml") == (
        "get configmaps cluster-autoscaler-status in namespace kube-system"
    )
    assert not perm.required


def test_run_doctor_rejects_bad_namespace_before_any_request() -> None:
    with pytest.raises(ConfigurationError) as info:
        probe.run_doctor(object(), "Not_A_Namespace")
    assert info.value.field == "namespace"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="k8s-step-operator")
    command.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_parses_doctor_arguments() -> None:
    args = _parse(["doctor", "-n", "ml", "--kubeconfig", "/k", "--context", "c", "--no-kueue"])
    assert (args.namespace, args.kubeconfig, args.context, args.kueue) == ("ml", "/k", "c", False)
    assert args.func is command.main
    assert _parse(["doctor"]).kueue is None


def doctor_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main(["doctor", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_missing_kubeconfig_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = doctor_cli(capsys, "-n", "ml", "--kubeconfig", str(tmp_path / "absent"))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("k8s-step-operator doctor: error: kubeconfig_path: ")
    assert err.rstrip().endswith("(set --kubeconfig or KUBECONFIG)")


def _kubeconfig(tmp_path: Path, namespace: str | None = None) -> Path:
    context: dict[str, str] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": context}],
                "current-context": "c",
            }
        )
    )
    return kubeconfig


def test_cli_bad_namespace_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = doctor_cli(capsys, "-n", "BAD", "--kubeconfig", str(_kubeconfig(tmp_path)))
    assert code == 2
    assert "namespace: expected a DNS-1123 label" in err
    assert err.count("\n") == 1


def test_cli_uses_the_context_namespace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, bool | None]] = []

    def fake_run_doctor(api_client: Any, namespace: str, *, kueue: bool | None = None) -> Any:
        seen.append((namespace, kueue))
        return build_report(namespace, checks(), nodes=[], namespace_obj=None, quotas=None)

    monkeypatch.setattr(command, "run_doctor", fake_run_doctor)
    kubeconfig = str(_kubeconfig(tmp_path, namespace="team-a"))
    code, out, _ = doctor_cli(capsys, "--kubeconfig", kubeconfig)
    assert code == 0 and out.startswith("Namespace team-a\n")
    code, out, _ = doctor_cli(capsys, "--kubeconfig", kubeconfig, "-n", "other", "-o", "json")
    assert code == 0 and json.loads(out)["namespace"] == "other"
    code, out, _ = doctor_cli(capsys, "--kubeconfig", kubeconfig, "--json", "--no-kueue")
    assert code == 0 and json.loads(out)["ok"] is True
    assert seen == [("team-a", None), ("other", None), ("team-a", False)]


def test_cli_unreachable_server_is_one_line_quickly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Port 1 on loopback refuses at once; doctor gives up after its short retry budget.
    started = time.monotonic()
    code, out, err = doctor_cli(capsys, "-n", "ml", "--kubeconfig", str(_kubeconfig(tmp_path)))
    assert time.monotonic() - started < 15
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith(
        "k8s-step-operator doctor: error: cannot reach the API server: Connection refused"
    )


@pytest.mark.parametrize("name", ["Not_A_Namespace", "-ml", "ml-", "a" * 64, "ml.steps", ""])
def test_namespace_rule_is_the_job_builders(name: str) -> None:
    # One rule, one place: doctor refuses exactly what _job.kube_syntax refuses, in its words.
    assert not is_dns_label(name)
    with pytest.raises(ConfigurationError) as info:
        probe.run_doctor(object(), name)
    assert info.value.accepted == DNS_LABEL_RULE


PURE_MODULES = ("gpus", "kueue", "permissions", "report")


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_modules_import_no_client(module: str) -> None:
    source = (ROOT / "k8s_step_operator" / "_doctor" / f"{module}.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    forbidden = (
        "kubernetes",
        "urllib3",
        "k8s_step_operator._kube",
        "k8s_step_operator._doctor.probe",
    )
    assert not [m for m in imported if m.startswith(forbidden)], imported
