"""The Helm chart and the manifests rendered from it: lint, schema, names, drift, and both ways of
installing them on the cluster (``helm install`` and ``kubectl apply -k manifests/``).
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from k8s_step_operator._doctor import doctor
from k8s_step_operator._doctor.doctor import run_doctor
from tests.cluster.conftest import request_token, service_account_client

if TYPE_CHECKING:
    from tests.cluster.conftest import InstallChart

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "k8s-step-operator"
MANIFESTS = ROOT / "manifests"
ALL_ON = [
    "--set",
    "namespace.create=true,namespace.name=ml-steps,pipeline.tokenSecret.create=true",
    "--set",
    "resourceQuota.enabled=true,limitRange.enabled=true,priorityClass.enabled=true",
    "--set",
    "kueue.enabled=true,kueue.createQueues=true",
    "--set",
    "kueue.topology.levels={example.com/block,example.com/rack}",
]


def helm(helm_bin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm_bin, *args], capture_output=True, text=True, timeout=60)


def template(helm_bin: str, *args: str, release: str = "r") -> list[dict[str, Any]]:
    proc = helm(helm_bin, "template", release, str(CHART), "--namespace", "ml", *args)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


# ---------------------------------------------------------------------------------------------
# Rendering (no cluster needed)


@pytest.mark.parametrize("extra", [[], ALL_ON], ids=["defaults", "all-on"])
def test_helm_lint_strict(helm_bin: str, extra: list[str]) -> None:
    proc = helm(helm_bin, "lint", "--strict", str(CHART), *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_manifests_match_the_chart() -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "e2e" / "check-manifests.sh")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_drift_is_caught_with_a_diff(helm_bin: str, tmp_path: Path) -> None:
    """A hand edit of manifests/ (here: an extra verb) fails the check and shows the line."""
    for part in ("charts", "manifests", "e2e/build/versions.env", "e2e/check-manifests.sh"):
        source, target = ROOT / part, tmp_path / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    rendered = tmp_path / "manifests" / "k8s-step-operator.yaml"
    text = rendered.read_text()
    edited = text.replace('resources: ["pods/log"]', 'resources: ["pods/log", "pods/exec"]')
    assert edited != text
    rendered.write_text(edited)
    script = tmp_path / "e2e" / "check-manifests.sh"
    env = {**os.environ, "HELM": helm_bin}
    proc = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 1
    assert '-    resources: ["pods/log", "pods/exec"]' in proc.stdout
    assert "drifted" in proc.stderr
    fixed = subprocess.run(
        ["bash", str(script), "--write"], capture_output=True, text=True, env=env, timeout=120
    )
    assert fixed.returncode == 0, fixed.stderr
    assert rendered.read_text() == text


def test_defaults_render_least_privilege_only(helm_bin: str) -> None:
    docs = template(helm_bin, "--skip-tests")
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "Role",
        "RoleBinding",
        "RoleBinding",
        "ServiceAccount",
        "ServiceAccount",
    ]
    # The one object outside the release's namespace: the cluster autoscaler's status, read only.
    elsewhere = [d for d in docs if d["metadata"].get("namespace", "ml") != "ml"]
    assert sorted((d["kind"], d["metadata"]["namespace"]) for d in elsewhere) == [
        ("Role", "kube-system"),
        ("RoleBinding", "kube-system"),
    ]
    (status_role,) = (d for d in elsewhere if d["kind"] == "Role")
    assert status_role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["cluster-autoscaler-status"],
            "verbs": ["get"],
        }
    ]
    off = template(helm_bin, "--skip-tests", "--set", "pipeline.rbac.autoscalerStatus=false")
    assert all(d["metadata"].get("namespace") != "kube-system" for d in off)
    step = next(d for d in docs if d["metadata"]["name"].endswith("-step"))
    assert step["automountServiceAccountToken"] is False
    for d in docs:
        for rule in d.get("rules", []):
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            # Secrets: create only (a step's secret environment values, owned by its Job).
            if "secrets" in rule["resources"]:
                assert rule["resources"] == ["secrets"] and rule["verbs"] == ["create"]
            # Services: create only (the headless Service of a step's ranks, owned by its Job).
            if "services" in rule["resources"]:
                assert rule["resources"] == ["services"] and rule["verbs"] == ["create"]
            assert "pods/exec" not in rule["resources"]


def test_every_optional_object_renders(helm_bin: str) -> None:
    docs = template(helm_bin, *ALL_ON)
    kinds = {d["kind"] for d in docs}
    assert {
        "Namespace",
        "Secret",
        "ResourceQuota",
        "LimitRange",
        "PriorityClass",
        "ResourceFlavor",
        "ClusterQueue",
        "LocalQueue",
        "Topology",
    } <= kinds
    (topology,) = (d for d in docs if d["kind"] == "Topology")
    assert [level["nodeLabel"] for level in topology["spec"]["levels"]] == [
        "example.com/block",
        "example.com/rack",
        "kubernetes.io/hostname",
    ]
    flavors = [d for d in docs if d["kind"] == "ResourceFlavor"]
    assert flavors[0]["spec"]["topologyName"] == topology["metadata"]["name"]
    namespace = next(d for d in docs if d["kind"] == "Namespace")
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    cluster_scoped = {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "PriorityClass",
        "ResourceFlavor",
        "ClusterQueue",
        "Topology",
    }
    for d in docs:
        if d["kind"] not in cluster_scoped and not d["metadata"]["name"].endswith(
            "-autoscaler-status"
        ):
            assert d["metadata"]["namespace"] == "ml-steps", d["kind"]
    quota = next(d for d in docs if d["kind"] == "ResourceQuota")
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "8"
    cq = next(d for d in docs if d["kind"] == "ClusterQueue")
    assert cq["spec"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ml-steps"
    }
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["namespace"] == "ml-steps")
    assert {
        "apiGroups": ["kueue.x-k8s.io"],
        "resources": ["workloads"],
        "verbs": [
            "get",
            "list",
            "watch",
        ],
    } in role["rules"]


def test_names_fit_63_characters_and_stay_distinct(helm_bin: str) -> None:
    release = "r" * 53  # Helm's own limit for release names
    docs = template(helm_bin, *ALL_ON, "--set", "tests.image=x", release=release)
    seen: set[tuple[str, str]] = set()
    for d in docs:
        name = d["metadata"]["name"]
        assert len(name) <= 63, name
        assert not name.endswith("-"), name
        assert (d["kind"], name) not in seen
        seen.add((d["kind"], name))
        for value in d["metadata"].get("labels", {}).values():
            assert len(str(value)) <= 63
    # Names that refer to each other still match after truncation.
    for ns in ("ml-steps", "kube-system"):
        role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["namespace"] == ns)
        binding = next(
            d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["namespace"] == ns
        )
        assert binding["roleRef"]["name"] == role["metadata"]["name"]


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        (["--set", "kueue.createQueues=true"], "/kueue/enabled"),
        (["--set", "namespace.podSecurity.enforce=strict"], "/namespace/podSecurity/enforce"),
        (["--set", "priorityClass.value=2000000000"], "/priorityClass/value"),
        (["--set", "namespace.name=Bad_Name"], "/namespace/name"),
        (["--set", "unknownKey=1"], "unknownKey"),
    ],
)
def test_schema_rejects_bad_values(helm_bin: str, values: list[str], complaint: str) -> None:
    proc = helm(helm_bin, "template", "r", str(CHART), *values)
    assert proc.returncode != 0
    assert complaint in proc.stderr


def test_chart_test_pod_checks_each_permission(helm_bin: str) -> None:
    docs = template(helm_bin, "--set", "pipeline.rbac.nodeReader=false")
    docs_tests = [d for d in docs if d["kind"] == "Pod"]
    (pod,) = docs_tests
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    checks = {tuple(c["args"][3:]) for c in pod["spec"]["containers"]}
    assert ("get", "pods", "--subresource=log") in checks
    assert ("create", "jobs.batch") in checks
    assert ("create", "secrets") in checks
    assert ("create", "services") in checks
    assert not any("nodes" in c for c in checks)
    assert len(checks) == 14


# ---------------------------------------------------------------------------------------------
# On the cluster


@pytest.mark.cluster
def test_helm_install_with_every_core_option(
    install_chart: InstallChart, namespace: str, api_client: Any
) -> None:
    """Quota, limits, priority and a long-lived token Secret install and work (Kueue's CRDs are
    not on the local cluster, so its objects are left out here)."""
    values = {
        "pipeline": {"tokenSecret": {"create": True}},
        "resourceQuota": {"enabled": True},
        "limitRange": {"enabled": True},
        "priorityClass": {"enabled": True},
    }
    sa = install_chart(namespace, values)
    core = k8s.CoreV1Api(api_client)
    quota = core.list_namespaced_resource_quota(namespace).items
    assert [q.spec.hard["requests.nvidia.com/gpu"] for q in quota] == ["8"]
    assert len(core.list_namespaced_limit_range(namespace).items) == 1
    priority = k8s.SchedulingV1Api(api_client).read_priority_class(
        f"{sa.release}-k8s-step-operator-gpu"
    )
    assert priority.value == 100000

    # The control plane fills the token Secret in; its token authenticates as the pipeline.
    secret_name = f"{sa.release}-k8s-step-operator-pipeline-token"
    deadline = time.monotonic() + 30
    while True:
        secret = core.read_namespaced_secret(secret_name, namespace)
        if secret.data and "token" in secret.data:
            break
        assert time.monotonic() < deadline, "the token Secret was never filled in"
        time.sleep(0.2)
    token = base64.b64decode(secret.data["token"]).decode()
    with service_account_client(api_client, token) as long_lived:
        review = k8s.AuthenticationV1Api(long_lived).create_self_subject_review(
            k8s.V1SelfSubjectReview()
        )
        assert review.status.user_info.username == (
            f"system:serviceaccount:{namespace}:{sa.service_account}"
        )
        assert run_doctor(long_lived, namespace).ok


@pytest.mark.cluster
def test_kubectl_apply_k_manifests(kubectl_bin: str, kubeconfig_path: Any, api_client: Any) -> None:
    """``kubectl apply -k manifests/`` works, is idempotent, and gives the same least privilege."""
    doc = yaml.safe_load((MANIFESTS / "namespace.yaml").read_text().split("---", 1)[1])
    ns = doc["metadata"]["name"]
    base = [kubectl_bin, "--kubeconfig", str(kubeconfig_path)]
    core = k8s.CoreV1Api(api_client)
    # A namespace left Terminating by an earlier run would refuse the apply.
    deadline = time.monotonic() + 90
    while True:
        try:
            phase = core.read_namespace(ns).status.phase
        except ApiException as e:
            assert e.status == 404
            break
        if phase != "Terminating":
            break
        assert time.monotonic() < deadline, f"namespace {ns} is still terminating"
        time.sleep(0.5)
    try:
        proc = subprocess.run(
            [*base, "apply", "-k", str(MANIFESTS)], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        labels = core.read_namespace(ns).metadata.labels
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        step = core.read_namespaced_service_account("k8s-step-operator-step", ns)
        assert step.automount_service_account_token is False
        # Applying again changes nothing.
        again = subprocess.run(
            [*base, "apply", "-k", str(MANIFESTS)], capture_output=True, text=True, timeout=120
        )
        assert again.returncode == 0, again.stderr
        assert "configured" not in again.stdout and "created" not in again.stdout, again.stdout

        token = request_token(api_client, ns, "k8s-step-operator-pipeline")
        with service_account_client(api_client, token) as pipeline:
            report = run_doctor(pipeline, ns)
            assert report.ok, report.missing
            # The manifests leave Kueue out: its permissions are optional when it is served.
            assert not [
                p for p in report.missing_optional if not p.group.endswith("kueue.x-k8s.io")
            ]
            with pytest.raises(ApiException) as info:
                k8s.CoreV1Api(pipeline).list_namespaced_secret(ns)
            assert info.value.status == 403
    finally:
        subprocess.run(
            [*base, "delete", "-k", str(MANIFESTS), "--ignore-not-found", "--wait=false"],
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.mark.parametrize(
    ("version", "cohort_key"), [("v1beta1", "cohort"), ("v1beta2", "cohortName")]
)
def test_kueue_api_versions(helm_bin: str, version: str, cohort_key: str) -> None:
    docs = template(
        helm_bin,
        "--set",
        f"kueue.enabled=true,kueue.createQueues=true,kueue.apiVersion={version}",
        "--set",
        "kueue.clusterQueue.cohort=shared",
    )
    queues = [d for d in docs if d["apiVersion"].startswith("kueue.x-k8s.io/")]
    assert {d["apiVersion"] for d in queues} == {f"kueue.x-k8s.io/{version}"}
    assert len(queues) == 3
    cq = next(d for d in queues if d["kind"] == "ClusterQueue")
    assert cq["spec"][cohort_key] == "shared"


@pytest.mark.cluster
def test_notes_hand_a_pipeline_its_own_kubeconfig(
    install_chart: InstallChart,
    namespace: str,
    helm_bin: str,
    kubectl_bin: str,
    kubeconfig_path: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The kubeconfig recipe printed by the chart's NOTES works as written, and doctor, given
    nothing but that kubeconfig, finds the namespace in it and reports ok."""
    sa = install_chart(namespace)
    notes = subprocess.run(
        [
            helm_bin,
            "get",
            "notes",
            sa.release,
            "-n",
            namespace,
            "--kubeconfig",
            str(kubeconfig_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    block = notes.split("kubeconfig of its own", 1)[1].split("\n\n")[1]
    script = "\n".join(line.removeprefix("  ") for line in block.splitlines())
    env = {
        **os.environ,
        "PATH": f"{Path(kubectl_bin).parent}{os.pathsep}{os.environ['PATH']}",
        "KUBECONFIG": str(kubeconfig_path),
    }
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    parser = argparse.ArgumentParser()
    doctor.add_parser(parser.add_subparsers())
    args = parser.parse_args(["doctor", "--kubeconfig", str(tmp_path / "pipeline.kubeconfig")])
    assert doctor.main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Namespace {namespace}\n")
    assert "OK: every required permission is granted" in out


@pytest.mark.cluster
def test_chart_made_namespace_enforces_restricted(
    install_chart: InstallChart, namespace: str, api_client: Any
) -> None:
    """With ``namespace.create`` the chart makes the steps' namespace, and Pod Security there
    refuses a privileged pod while the pipeline's account works as usual."""
    steps_ns = f"{namespace[:55]}-steps"
    sa = install_chart(namespace, {"namespace": {"create": True, "name": steps_ns}})
    assert sa.namespace == steps_ns
    core = k8s.CoreV1Api(api_client)
    labels = core.read_namespace(steps_ns).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    privileged = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="privileged"),
        spec=k8s.V1PodSpec(
            containers=[
                k8s.V1Container(
                    name="c",
                    image="busybox:1.36",
                    security_context=k8s.V1SecurityContext(privileged=True),
                )
            ]
        ),
    )
    with pytest.raises(ApiException) as info:
        core.create_namespaced_pod(steps_ns, privileged)
    assert info.value.status == 403
    assert "violates PodSecurity" in str(info.value.body)
    assert run_doctor(sa.api_client, steps_ns).ok
