"""The escape hatch: every way an override can break the Job or the restricted profile."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from k8s_step_operator import (
    ConfigurationError,
    KubernetesJobStepOperatorSettings,
    StepRunInfo,
    build_job,
)
from k8s_step_operator._job.overrides import (
    ALLOWED_POD_SPEC_OVERRIDE_KEYS,
    check_overrides_fit,
    harden_init_containers,
)

INFO = StepRunInfo(
    run_id="r", step_run_id="a", pipeline_step_name="train", images={"default": "i:1"}
)
POD = "settings.pod_spec_overrides"
CONTAINER = "settings.container_overrides"


def build(**settings: Any) -> dict[str, Any]:
    return build_job(INFO, ["python"], {}, KubernetesJobStepOperatorSettings(**settings))


def pod(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def refused(field: str, **settings: Any) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as exc:
        build(**settings)
    assert exc.value.field == field, exc.value
    assert exc.value.accepted
    return exc.value


def init(**fields: Any) -> dict[str, Any]:
    return {"name": "init", "image": "busybox:1", **fields}


# --- the restricted profile: every contradiction is refused, naming the override -------------


@pytest.mark.parametrize(
    ("context", "where"),
    [
        ({"privileged": True}, "privileged"),
        ({"allowPrivilegeEscalation": True}, "allowPrivilegeEscalation"),
        ({"capabilities": {"add": ["SYS_ADMIN"]}}, "capabilities.add[0]"),
        ({"capabilities": {"add": ["NET_BIND_SERVICE", "NET_ADMIN"]}}, "capabilities.add[1]"),
        ({"capabilities": {"drop": ["NET_RAW"]}}, "capabilities.drop"),
        ({"runAsUser": 0}, "runAsUser"),
        ({"runAsNonRoot": False}, "runAsNonRoot"),
        ({"seccompProfile": {"type": "Unconfined"}}, "seccompProfile.type"),
        ({"appArmorProfile": {"type": "Unconfined"}}, "appArmorProfile.type"),
        ({"seLinuxOptions": {"type": "spc_t"}}, "seLinuxOptions.type"),
        ({"seLinuxOptions": {"user": "system_u"}}, "seLinuxOptions.user"),
        ({"seLinuxOptions": {"role": "system_r"}}, "seLinuxOptions.role"),
    ],
)
def test_init_container_contradicting_restricted_is_refused(
    context: dict[str, Any], where: str
) -> None:
    overrides = {"initContainers": [init(securityContext=context)]}
    error = refused(
        f"{POD}['initContainers'][0].securityContext.{where}", pod_spec_overrides=overrides
    )
    assert "pod_security_profile='none'" in error.accepted
    assert "drop the field" in error.accepted


@pytest.mark.parametrize(
    "context",
    [
        {"allowPrivilegeEscalation": True},
        {"capabilities": {"add": ["SYS_ADMIN"]}},
        {"runAsUser": 0},
        {"seccompProfile": {"type": "Unconfined"}},
        {"seLinuxOptions": {"type": "spc_t"}},
        {"privileged": True},
    ],
)
def test_the_same_init_containers_are_fine_without_the_profile(context: dict[str, Any]) -> None:
    job = build(
        pod_security_profile="none",
        pod_spec_overrides={"initContainers": [init(securityContext=context)]},
    )
    assert pod(job)["initContainers"][0]["securityContext"] == context


def test_privileged_with_its_own_no_escalation_is_refused_in_any_profile() -> None:
    # The API server refuses it (422): a privileged container escalates by definition.
    context = {"privileged": True, "allowPrivilegeEscalation": False}
    refused(
        f"{POD}['initContainers'][0].securityContext.privileged",
        pod_security_profile="none",
        pod_spec_overrides={"initContainers": [init(securityContext=context)]},
    )


@pytest.mark.parametrize(
    ("volume", "kind"),
    [
        ({"hostPath": {"path": "/var/run"}}, "hostPath"),
        ({"nfs": {"server": "nfs.example.com", "path": "/exports"}}, "nfs"),
    ],
)
def test_volume_types_outside_restricted_are_refused(volume: dict[str, Any], kind: str) -> None:
    overrides = {"volumes": [{"name": "v", **volume}]}
    error = refused(f"{POD}['volumes'][0].{kind}", pod_spec_overrides=overrides)
    assert "persistentVolumeClaim" in error.accepted
    job = build(pod_security_profile="none", pod_spec_overrides=overrides)
    assert pod(job)["volumes"] == [{"name": "v", **volume}]


@pytest.mark.parametrize(
    "volume",
    [
        {"emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
        {"configMap": {"name": "cfg", "items": [{"key": "a", "path": "a.yaml"}]}},
        {"secret": {"secretName": "creds", "defaultMode": 0o400}},
        {"persistentVolumeClaim": {"claimName": "data"}},
        {"projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
        {"downwardAPI": {"items": [{"path": "l", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        {"csi": {"driver": "csi.example.com", "volumeAttributes": {"a": "b"}}},
        {
            "ephemeral": {
                "volumeClaimTemplate": {
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    }
                }
            }
        },
    ],
)
def test_restricted_volume_types_pass(volume: dict[str, Any]) -> None:
    job = build(pod_spec_overrides={"volumes": [{"name": "v", **volume}]})
    assert pod(job)["volumes"] == [{"name": "v", **volume}]


def test_host_ports_are_refused_under_restricted() -> None:
    refused(
        f"{CONTAINER}['ports'][0].hostPort",
        container_overrides={"ports": [{"containerPort": 80, "hostPort": 8080}]},
    )
    refused(
        f"{POD}['initContainers'][0].ports[0].hostPort",
        pod_spec_overrides={
            "initContainers": [init(ports=[{"containerPort": 80, "hostPort": 8080}])]
        },
    )
    job = build(
        pod_security_profile="none",
        container_overrides={"ports": [{"containerPort": 80, "hostPort": 8080}]},
    )
    assert pod(job)["containers"][0]["ports"] == [{"containerPort": 80, "hostPort": 8080}]
    # Without a host port, a port is fine under the profile.
    build(container_overrides={"ports": [{"containerPort": 80, "name": "web"}]})


def test_host_network_under_none_needs_matching_ports() -> None:
    refused(f"{POD}['hostNetwork']", pod_spec_overrides={"hostNetwork": True})
    refused(
        f"{CONTAINER}['ports'][0].hostPort",
        pod_security_profile="none",
        pod_spec_overrides={"hostNetwork": True},
        container_overrides={"ports": [{"containerPort": 80, "hostPort": 81}]},
    )
    build(
        pod_security_profile="none",
        pod_spec_overrides={"hostNetwork": True},
        container_overrides={"ports": [{"containerPort": 80, "hostPort": 80}]},
    )


def test_host_namespaces_and_pod_security_are_not_reachable() -> None:
    for key in ("hostPID", "hostIPC", "securityContext", "containers", "preemptionPolicy"):
        assert key not in ALLOWED_POD_SPEC_OVERRIDE_KEYS
        refused(f"{POD}[{key!r}]", pod_spec_overrides={key: True})
    refused(f"{CONTAINER}['securityContext']", container_overrides={"securityContext": {}})


def test_apparmor_and_seccomp_annotations_are_refused() -> None:
    refused(
        "settings.pod_annotations['container.apparmor.security.beta.kubernetes.io/step']",
        pod_annotations={"container.apparmor.security.beta.kubernetes.io/step": "unconfined"},
    )
    refused(
        "settings.pod_annotations['seccomp.security.alpha.kubernetes.io/pod']",
        pod_annotations={"seccomp.security.alpha.kubernetes.io/pod": "unconfined"},
    )


def test_windows_pods_are_refused() -> None:
    refused(f"{POD}['os'].name", pod_spec_overrides={"os": {"name": "windows"}})
    assert pod(build(pod_spec_overrides={"os": {"name": "linux"}}))["os"] == {"name": "linux"}


# --- apply: the profile's defaults fill what init containers left out --------------------------


def test_init_containers_are_hardened_without_contradiction() -> None:
    job = build(
        pod_spec_overrides={
            "initContainers": [
                init(),
                init(
                    name="bind",
                    securityContext={
                        "capabilities": {"add": ["NET_BIND_SERVICE"]},
                        "runAsUser": 2000,
                        "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"},
                    },
                ),
            ]
        }
    )
    plain, bind = pod(job)["initContainers"]
    assert plain["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert bind["securityContext"] == {
        "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
        "runAsUser": 2000,
        "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"},
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
    }
    # Without the profile, nothing is added.
    job = build(pod_security_profile="none", pod_spec_overrides={"initContainers": [init()]})
    assert "securityContext" not in pod(job)["initContainers"][0]


def test_the_fit_check_never_changes_what_it_checks() -> None:
    overrides = {"initContainers": [init(), init(name="two", securityContext={"runAsUser": 5})]}
    container = {"volumeMounts": []}
    before = copy.deepcopy((overrides, container))
    check_overrides_fit(
        overrides,
        container,
        restricted=True,
        builder_volumes=[],
        builder_mounts=[],
        container_name="step",
        secret_like=lambda name, value: False,
    )
    assert (overrides, container) == before
    harden_init_containers(overrides["initContainers"])
    assert overrides["initContainers"][0]["securityContext"]["runAsNonRoot"] is True


# --- what the API server would refuse in any profile ---------------------------------------------


@pytest.mark.parametrize(
    ("pod_overrides", "container_overrides", "field"),
    [
        ({"volumes": [{"name": "v"}]}, {}, f"{POD}['volumes'][0]"),
        (
            {"volumes": [{"name": "v", "emptyDir": {}, "secret": {"secretName": "s"}}]},
            {},
            f"{POD}['volumes'][0]",
        ),
        ({"volumes": [{"name": "v", "gitRepo": {}}]}, {}, f"{POD}['volumes'][0].gitRepo"),
        (
            {"volumes": [{"name": "v", "persistentVolumeClaim": {}}]},
            {},
            f"{POD}['volumes'][0].persistentVolumeClaim.claimName",
        ),
        (
            {"volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]},
            {},
            f"{POD}['volumes'][1].name",
        ),
        (
            {},
            {"volumeMounts": [{"name": "nope", "mountPath": "/x"}]},
            f"{CONTAINER}['volumeMounts'][0].name",
        ),
        (
            {"volumes": [{"name": "v", "emptyDir": {}}]},
            {"volumeMounts": [{"name": "v", "mountPath": "relative"}]},
            f"{CONTAINER}['volumeMounts'][0].mountPath",
        ),
        (
            {"volumes": [{"name": "v", "emptyDir": {}}]},
            {"volumeMounts": [{"name": "v", "mountPath": "/x", "subPath": "/abs"}]},
            f"{CONTAINER}['volumeMounts'][0].subPath",
        ),
        (
            {"volumes": [{"name": "v", "emptyDir": {}}]},
            {"volumeDevices": [{"name": "v", "devicePath": "/dev/xvda"}]},
            f"{CONTAINER}['volumeDevices'][0].name",
        ),
        ({"initContainers": [init(name="step")]}, {}, f"{POD}['initContainers'][0].name"),
        ({"initContainers": [init(image="")]}, {}, f"{POD}['initContainers'][0].image"),
        (
            {"initContainers": [init(readinessProbe={"exec": {"command": ["true"]}})]},
            {},
            f"{POD}['initContainers'][0].readinessProbe",
        ),
        (
            {"initContainers": [init(securityContext={"procMount": "Unmasked"})]},
            {},
            f"{POD}['initContainers'][0].securityContext.procMount",
        ),
        (
            {"initContainers": [init(env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}])]},
            {},
            f"{POD}['initContainers'][0].env[0].name",
        ),
        (
            {
                "initContainers": [
                    init(resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1"}})
                ]
            },
            {},
            f"{POD}['initContainers'][0].resources.requests['cpu']",
        ),
        (
            {},
            {"livenessProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 1}}},
            f"{CONTAINER}['livenessProbe']",
        ),
        (
            {},
            {"readinessProbe": {"exec": {"command": []}}},
            f"{CONTAINER}['readinessProbe'].exec.command",
        ),
        (
            {},
            {"livenessProbe": {"exec": {"command": ["true"]}, "successThreshold": 2}},
            f"{CONTAINER}['livenessProbe'].successThreshold",
        ),
        (
            {},
            {"readinessProbe": {"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 5}},
            f"{CONTAINER}['readinessProbe'].terminationGracePeriodSeconds",
        ),
        (
            {},
            {"lifecycle": {"preStop": {"sleep": {"seconds": 31}}}},
            f"{CONTAINER}['lifecycle'].preStop.sleep.seconds",
        ),
        (
            {},
            {"lifecycle": {"preStop": {"tcpSocket": {"port": 80}}}},
            f"{CONTAINER}['lifecycle'].preStop.tcpSocket",
        ),
        (
            {},
            {"resizePolicy": [{"resourceName": "memory", "restartPolicy": "RestartContainer"}]},
            f"{CONTAINER}['resizePolicy'][0].restartPolicy",
        ),
        ({}, {"ports": [{"containerPort": 70000}]}, f"{CONTAINER}['ports'][0].containerPort"),
        (
            {},
            {"ports": [{"containerPort": 80, "name": "Bad_Name"}]},
            f"{CONTAINER}['ports'][0].name",
        ),
        ({"dnsPolicy": "None"}, {}, f"{POD}['dnsConfig']"),
        ({"dnsConfig": {"nameservers": ["not-an-ip"]}}, {}, f"{POD}['dnsConfig'].nameservers[0]"),
        (
            {"hostAliases": [{"ip": "fe80::1%eth0", "hostnames": ["x"]}]},
            {},
            f"{POD}['hostAliases'][0].ip",
        ),
        (
            {"hostAliases": [{"ip": "10.0.0.1", "hostnames": ["Bad_Name"]}]},
            {},
            f"{POD}['hostAliases'][0].hostnames[0]",
        ),
        ({"subdomain": "A"}, {}, f"{POD}['subdomain']"),
        ({"hostname": "a" * 64}, {}, f"{POD}['hostname']"),
        ({"terminationGracePeriodSeconds": -1}, {}, f"{POD}['terminationGracePeriodSeconds']"),
        (
            {
                "topologySpreadConstraints": [
                    {"maxSkew": 0, "topologyKey": "z", "whenUnsatisfiable": "DoNotSchedule"}
                ]
            },
            {},
            f"{POD}['topologySpreadConstraints'][0].maxSkew",
        ),
    ],
)
def test_what_the_api_server_refuses_is_refused_first(
    pod_overrides: dict[str, Any], container_overrides: dict[str, Any], field: str
) -> None:
    refused(
        field,
        pod_security_profile="none",
        pod_spec_overrides=pod_overrides,
        container_overrides=container_overrides,
    )


def test_a_sleep_may_last_as_long_as_the_grace_period() -> None:
    build(
        pod_spec_overrides={"terminationGracePeriodSeconds": 60},
        container_overrides={"lifecycle": {"preStop": {"sleep": {"seconds": 60}}}},
    )


def test_init_container_secret_like_env_is_refused() -> None:
    overrides = {"initContainers": [init(env=[{"name": "DB_PASSWORD", "value": "x"}])]}
    refused(f"{POD}['initContainers'][0].env[0]", pod_spec_overrides=overrides)
    build(pod_spec_overrides=overrides, allow_secret_like_env=True)


def test_duplicate_host_ports_across_containers_are_refused() -> None:
    # The step's container is read first; the init container's port is the second use.
    refused(
        f"{POD}['initContainers'][0].ports[0]",
        pod_security_profile="none",
        pod_spec_overrides={
            "initContainers": [
                init(restartPolicy="Always", ports=[{"containerPort": 80, "hostPort": 8080}])
            ]
        },
        container_overrides={"ports": [{"containerPort": 81, "hostPort": 8080}]},
    )
