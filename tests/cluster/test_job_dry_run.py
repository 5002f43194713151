"""Every Job the builder produces is accepted by the real API server (server-side dry-run).

Hypothesis generates settings and step identities broadly - unicode and over-long names, invalid
label keys and values, odd GPU counts, vendors, models and MIG profiles, shm and memory sizes,
tolerations, selectors, environment and secrets, and overrides of every kind (volumes of every
type, hostPath and NFS included; init containers with security contexts, ports, probes and
lifecycles; host network, DNS, ports with host ports, mounts, probes...) in both security
profiles. Each example must either be refused by us before anything is sent (a
``ConfigurationError`` naming the field; nothing else) or be accepted by
``create_namespaced_job(..., dry_run="All")`` and, under the restricted profile, have its pod
accepted in a namespace that enforces Pod Security "restricted". A server-side rejection of a
Job we built is a bug in the builder.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from k8s_step_operator import (
    ConfigurationError,
    PipelineConfiguration,
    ResourceSettings,
    StepConfiguration,
    StepRunInfo,
    build_job,
)
from k8s_step_operator._job.builder import build_env_secret
from k8s_step_operator._job.ranks import build_rank_service
from k8s_step_operator._job.settings import parse_settings

pytestmark = pytest.mark.cluster


label_part = st.from_regex(r"\A[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?\Z")
dns_label = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,12}[a-z0-9])?\Z")
dns_subdomain = st.builds(
    lambda parts: ".".join(parts), st.lists(dns_label, min_size=1, max_size=3)
)
qualified_key = st.one_of(
    label_part,
    st.builds(lambda p, n: f"{p}/{n}", dns_subdomain, label_part),
)
any_text = st.text(max_size=80)
weird_text = st.one_of(
    any_text,
    st.text(min_size=60, max_size=400),
    st.text(alphabet="-_./ :*@#", max_size=20),
)
key = st.one_of(qualified_key, qualified_key, any_text)
label_val = st.one_of(st.just(""), label_part, label_part, any_text)
env_name = st.one_of(
    st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,15}\Z"),
    st.sampled_from(
        ["NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "HF_TOKEN", "DB_PASSWORD", "A.B", "-x"]
    ),
    any_text,
)
label_val_ok = st.one_of(st.just(""), label_part)
env_name_ok = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_.-]{0,15}\Z").filter(
    lambda n: (
        n not in {"NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES"}
    )
)
memory_huge = st.builds(lambda n: f"{n}PiB", st.integers(8192, 10**9))
quantity = st.builds(
    lambda n, frac, suffix: f"{n}{frac}{suffix}",
    st.integers(0, 10**6),
    st.sampled_from(["", ".5", ".25"]),
    st.sampled_from(["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E", "m"]),
)
memory = st.builds(
    lambda n, unit: f"{n}{unit}",
    st.integers(0, 10**7),
    st.sampled_from(["KB", "KiB", "MB", "MiB", "GB", "GiB", "TB", "TiB", "PB", "PiB"]),
)
toleration_ok = st.one_of(
    st.builds(
        lambda k, e: {"key": k, "operator": "Exists", **({"effect": e} if e else {})},
        st.one_of(st.just(""), qualified_key),
        st.sampled_from(["", "NoSchedule", "PreferNoSchedule", "NoExecute"]),
    ),
    st.builds(
        lambda k, v, e: {"key": k, "operator": "Equal", "value": v, "effect": e},
        qualified_key,
        label_val_ok,
        st.sampled_from(["", "NoSchedule", "PreferNoSchedule"]),
    ),
    st.builds(
        lambda k, secs: {
            "key": k,
            "operator": "Exists",
            "effect": "NoExecute",
            "toleration_seconds": secs,
        },
        qualified_key,
        st.integers(-(2**63), 2**63 - 1),
    ),
)
toleration = st.fixed_dictionaries(
    {},
    optional={
        "key": st.one_of(st.just(""), qualified_key, any_text),
        "operator": st.sampled_from(["Exists", "Equal", "Maybe"]),
        "value": label_val,
        "effect": st.sampled_from(["", "NoSchedule", "PreferNoSchedule", "NoExecute", "Bad"]),
        "toleration_seconds": st.one_of(st.none(), st.integers(-(2**64), 2**64)),
    },
)
node_affinity = st.builds(
    lambda k, op, vals: {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": k, "operator": op, "values": vals}]}
                ]
            }
        }
    },
    qualified_key,
    st.just("In"),
    st.lists(label_part, min_size=1, max_size=3),
)
# --- the escape hatch: overrides of every kind, in both profiles, valid or not -----------------


def mostly(valid: list[Any], invalid: list[Any], odds: int = 8) -> st.SearchStrategy[Any]:
    """One of ``invalid`` once in ``odds`` draws, else one of ``valid``: a mistake here and there.

    An override has many parts; the odds keep most examples valid enough to reach the server.
    """
    pool = valid * ((odds - 1) * len(invalid)) + invalid * len(valid)
    return st.sampled_from(pool)


volume_name = mostly(["data", "cfg", "cache", "token", "scratch"], ["dshm", "Bad_Name"], 24)
rel_path = mostly(["app.yaml", "conf/app.yaml"], ["../up", "/abs", ""], 24)
abs_path = mostly(["/data", "/cache", "/etc/cfg", "/srv"], ["/dev/shm", "relative", "/a/../b"], 24)
key_paths = st.lists(
    st.fixed_dictionaries({"key": mostly(["k", "a.b"], ["bad/key"]), "path": rel_path}),
    max_size=2,
)
volume_source = st.one_of(
    st.builds(
        lambda medium, size: {"emptyDir": {**medium, **size}},
        mostly([{}, {"medium": "Memory"}], [{"medium": "HugePages"}]),
        mostly([{}, {"sizeLimit": "1Gi"}, {"sizeLimit": "0"}], [{"sizeLimit": "1 Gi"}]),
    ),
    st.builds(
        lambda n, items: {"configMap": {"name": n, **({"items": items} if items else {})}},
        mostly(["cfg"], ["Bad"]),
        key_paths,
    ),
    st.builds(lambda n: {"secret": {"secretName": n}}, mostly(["creds"], ["", "x" * 300])),
    st.builds(
        lambda n: {"persistentVolumeClaim": {"claimName": n, "readOnly": True}},
        mostly(["data"], ["Bad Claim"]),
    ),
    st.builds(lambda p: {"hostPath": {"path": p}}, abs_path),
    st.builds(
        lambda p, t: {"hostPath": {"path": p, "type": t}},
        abs_path,
        mostly(["Directory", "DirectoryOrCreate"], ["Weird"]),
    ),
    st.just({"nfs": {"server": "nfs.example.com", "path": "/exports"}}),
    st.builds(
        lambda d: {"csi": {"driver": d, "readOnly": True}},
        mostly(["csi.example.com", "Example.COM"], ["bad driver"]),
    ),
    st.builds(
        lambda exp: {
            "projected": {
                "sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": exp}},
                    {"configMap": {"name": "cfg"}},
                ]
            }
        },
        mostly([600, 3600], [60]),
    ),
    st.builds(
        lambda f: {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": f}}]}},
        mostly(["metadata.labels", "metadata.name"], ["spec.nodeName"]),
    ),
    st.builds(
        lambda modes, size: {
            "ephemeral": {
                "volumeClaimTemplate": {
                    "spec": {"accessModes": modes, "resources": {"requests": {"storage": size}}}
                }
            }
        },
        mostly([["ReadWriteOnce"]], [[], ["ReadWriteOncePod", "ReadWriteOnce"]]),
        mostly(["1Gi"], ["0"]),
    ),
    mostly(
        [{"emptyDir": {}}],
        [
            {"emptyDir": {}, "hostPath": {"path": "/two-sources"}},
            {"gitRepo": {"repository": "https://example.com/r.git"}},
        ],
    ),
)
port = st.fixed_dictionaries(
    {"containerPort": mostly([80, 8080, 9000], [0, 70000])},
    optional={
        "hostPort": mostly([0, 8080], [9090]),
        "protocol": mostly(["TCP", "UDP"], ["HTTP"]),
        "name": mostly(["web", "metrics"], ["Bad_Name", "a-very-long-port-name"]),
    },
)
handler = mostly(
    [
        {"exec": {"command": ["true"]}},
        {"httpGet": {"path": "/healthz", "port": 8080}},
        {"httpGet": {"port": "web"}},
        {"tcpSocket": {"port": 8080}},
        {"grpc": {"port": 9090}},
    ],
    [{"exec": {"command": []}}, {"exec": {"command": ["true"]}, "tcpSocket": {"port": 1}}, {}],
)
probe = st.builds(
    lambda h, extra: {**h, **extra},
    handler,
    st.fixed_dictionaries(
        {},
        optional={
            "periodSeconds": mostly([0, 10], [-1]),
            "successThreshold": mostly([1], [2]),
            "failureThreshold": st.just(3),
            "terminationGracePeriodSeconds": mostly([5], [0]),
        },
    ),
)
lifecycle = st.fixed_dictionaries(
    {},
    optional={
        "preStop": st.one_of(
            st.builds(lambda n: {"sleep": {"seconds": n}}, mostly([0, 5, 30], [31, 120])),
            st.just({"exec": {"command": ["sh", "-c", "sleep 1"]}}),
            st.just({"tcpSocket": {"port": 80}}),
        ),
        "postStart": st.just({"httpGet": {"path": "/", "port": 80}}),
    },
)
# A security context may contradict the restricted profile in every way Pod Security checks.
security_context = st.fixed_dictionaries(
    {},
    optional={
        "privileged": st.booleans(),
        "allowPrivilegeEscalation": st.booleans(),
        "capabilities": st.fixed_dictionaries(
            {},
            optional={
                "add": st.lists(
                    st.sampled_from(["NET_BIND_SERVICE", "SYS_ADMIN", "NET_ADMIN"]), max_size=2
                ),
                "drop": st.sampled_from([["ALL"], ["NET_RAW"], []]),
            },
        ),
        "runAsUser": mostly([0, 1000, 2000], [2**31]),
        "runAsNonRoot": st.booleans(),
        "readOnlyRootFilesystem": st.booleans(),
        "seccompProfile": mostly(
            [
                {"type": "RuntimeDefault"},
                {"type": "Unconfined"},
                {"type": "Localhost", "localhostProfile": "profiles/audit.json"},
            ],
            [{"type": "Localhost"}],
        ),
        "appArmorProfile": st.sampled_from([{"type": "RuntimeDefault"}, {"type": "Unconfined"}]),
        "seLinuxOptions": st.sampled_from(
            [{"type": "container_t"}, {"type": "spc_t"}, {"user": "system_u"}, {"level": "s0"}]
        ),
        "procMount": mostly(["Default"], ["Unmasked"]),
    },
)


@st.composite
def overrides(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pod-spec and container overrides, drawn together so that mounts mostly name volumes."""
    # Names mostly unique: a duplicate is one mistake among many.
    volumes = draw(
        st.lists(
            st.builds(lambda n, src: {"name": n, **src}, volume_name, volume_source),
            max_size=3,
            unique_by=draw(st.sampled_from([lambda v: v["name"]] * 7 + [lambda v: id(v)])),
        )
    )
    names = [v["name"] for v in volumes] + ["dshm"]
    mount = st.fixed_dictionaries(
        {"name": mostly(names, ["missing", "Bad_Name"]), "mountPath": abs_path},
        optional={
            "readOnly": st.booleans(),
            "subPath": rel_path,
            "mountPropagation": mostly(["None", "HostToContainer"], ["Bidirectional"]),
        },
    )
    init_container = st.fixed_dictionaries(
        {
            "name": mostly(["init", "fetch"], ["step", "Bad"]),
            "image": mostly(["busybox:1"], ["", "has space"]),
        },
        optional={
            "command": st.just(["sh", "-c", "true"]),
            "env": st.lists(
                st.fixed_dictionaries(
                    {"name": mostly(["MODE"], ["DB_PASSWORD", "NVIDIA_VISIBLE_DEVICES"])},
                    optional={"value": st.sampled_from(["x", "true"])},
                ),
                max_size=2,
            ),
            "volumeMounts": st.lists(mount, max_size=2),
            "securityContext": security_context,
            "ports": st.lists(port, max_size=1),
            "resources": mostly(
                [{"requests": {"cpu": "100m", "memory": "64Mi"}}],
                [{"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}, {"limits": {"x.com/a": "1"}}],
            ),
            "restartPolicy": mostly(["Always"], ["OnFailure"]),
            "readinessProbe": probe,
            "lifecycle": lifecycle,
        },
    )
    pod_fields: dict[str, st.SearchStrategy[Any]] = {
        "volumes": st.just(volumes),
        "initContainers": st.lists(init_container, max_size=2),
        "hostNetwork": st.booleans(),
        "dnsPolicy": mostly(["ClusterFirst", "Default", "None"], ["Sometimes"]),
        "dnsConfig": mostly(
            [
                {"nameservers": ["10.0.0.10"], "searches": ["svc.cluster.local"]},
                {"options": [{"name": "ndots", "value": "2"}]},
            ],
            [{"nameservers": ["not-an-ip"]}],
        ),
        "hostAliases": mostly(
            [[{"ip": "10.1.2.3", "hostnames": ["db.local"]}]],
            [[{"ip": "fe80::1%eth0", "hostnames": ["x"]}]],
        ),
        "topologySpreadConstraints": mostly(
            [
                [
                    {
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": {"app": "x"}},
                    }
                ]
            ],
            [[{"maxSkew": 0, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]],
        ),
        "terminationGracePeriodSeconds": mostly([0, 5, 60], [-1]),
        "enableServiceLinks": st.booleans(),
        "shareProcessNamespace": st.booleans(),
        "schedulerName": st.sampled_from(["default-scheduler", "my-scheduler"]),
        "runtimeClassName": mostly(["gvisor"], ["Bad Class"]),
        "hostname": st.one_of(*[dns_label] * 7, any_text),
        "subdomain": st.one_of(*[dns_label] * 7, any_text),
        "readinessGates": st.just([{"conditionType": "example.com/ready"}]),
        "resourceClaims": mostly(
            [[{"name": "gpu", "resourceClaimTemplateName": "gpu-template"}]], [[{"name": "x"}]]
        ),
        "os": mostly([{"name": "linux"}], [{"name": "windows"}]),
    }
    container_fields: dict[str, st.SearchStrategy[Any]] = {
        "ports": st.lists(port, max_size=2),
        "volumeMounts": st.lists(mount, max_size=2),
        "volumeDevices": st.lists(
            st.fixed_dictionaries({"name": volume_name, "devicePath": abs_path}), max_size=1
        ),
        "livenessProbe": probe,
        "readinessProbe": probe,
        "startupProbe": probe,
        "workingDir": mostly(["/work"], ["relative"]),
        "lifecycle": lifecycle,
        "terminationMessagePolicy": mostly(["File", "FallbackToLogsOnError"], ["Never"]),
        "terminationMessagePath": mostly(["/dev/termination-log"], ["relative"]),
        "resizePolicy": mostly(
            [[{"resourceName": "cpu", "restartPolicy": "NotRequired"}]],
            [[{"resourceName": "memory", "restartPolicy": "RestartContainer"}]],
        ),
        "stdin": st.booleans(),
        "tty": st.booleans(),
    }
    pod = draw(_some_of(pod_fields, always=["volumes"] if volumes else []))
    container = draw(_some_of(container_fields))
    return pod, container


def _some_of(
    fields: dict[str, st.SearchStrategy[Any]], always: list[str] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Up to three of the override fields (and those in ``always``), each from its strategy."""
    return st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: fields[k] for k in {*keys, *(always or [])}})
    )


# Keys the settings never accept, and values of the wrong type.
bad_pod_overrides = st.sampled_from(
    [
        {"volumes": [{"name": "dshm", "emptyDir": {}}], "containers": []},
        {"containers": []},
        {"securityContext": {"runAsUser": 0}},
        {"terminationGracePeriodSeconds": "soon"},
        {"volumes": {"name": "x"}},
        {"preemptionPolicy": "Never"},
        {"tolerations": [{"operator": "Exists"}]},
        {"hostPID": True},
        {"hostIPC": True},
        {"volumes": [{"name": "x", "hostPath": {"path": float("nan")}}]},
    ]
)
bad_container_overrides = st.sampled_from(
    [
        {"securityContext": {"privileged": True}},
        {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
        {"env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]},
        {"image": "other"},
        {"command": ["sh"]},
    ]
)
secret_ref = st.one_of(
    st.fixed_dictionaries(
        {"name": st.one_of(dns_subdomain, any_text), "key": st.one_of(label_part, any_text)},
        optional={"optional": st.booleans()},
    ),
    any_text,  # a value where a reference is required
)

# Values Kubernetes accepts, per settings field. Weird-but-legal inputs (unicode annotation values,
# long names, symbols in commands) stay in: the builder must carry them through intact.
VALID: dict[str, st.SearchStrategy[Any]] = {
    "image": st.sampled_from(
        ["python:3.11-slim", "registry.example:5000/team/train@sha256:" + "a" * 64]
    ),
    "image_pull_policy": st.sampled_from([None, "Always", "IfNotPresent", "Never"]),
    "image_pull_secrets": st.lists(dns_subdomain, max_size=2),
    "service_account_name": st.one_of(st.none(), dns_subdomain),
    "automount_service_account_token": st.booleans(),
    "gpu_count": st.one_of(
        st.integers(1, 8), st.integers(1, 8), st.integers(0, 1_000_000), st.none()
    ),
    "gpu_vendor": st.one_of(
        st.sampled_from(["nvidia", "amd", "intel", "example.com/fpga", "xilinx.com/fpga-u250"]),
        st.builds(lambda p, n: f"{p}.io/{n}", dns_label, label_part),
    ),
    "gpu_type": st.one_of(
        st.none(),
        st.sampled_from(["NVIDIA-H100-80GB-HBM3", "nvidia-tesla-t4", "A100", "MI300X"]),
        label_part,
    ),
    "gpu_label_scheme": st.sampled_from(
        [None, "gpu-feature-discovery", "amd-node-labeller", "gke", "karpenter"]
    ),
    "gpu_label_key": st.one_of(st.none(), qualified_key),
    "mig_profile": st.one_of(
        st.none(), st.sampled_from(["1g.5gb", "2g.20gb", "3g.40gb", "7g.80gb"])
    ),
    "gpu_tolerations": st.booleans(),
    "shm_size": st.one_of(
        st.none(),
        st.builds(
            lambda n, u: f"{n}{u}",
            st.integers(1, 10**6),
            st.sampled_from(["", "Ki", "Mi", "Gi", "Ti", "k", "M", "G"]),
        ),
    ),
    "cpu_limit": st.sampled_from([False, False, False, False, True]),
    "node_selector": st.dictionaries(qualified_key, label_val_ok, max_size=3),
    "affinity": st.one_of(st.none(), node_affinity),
    "tolerations": st.lists(toleration_ok, max_size=3),
    "priority_class_name": st.one_of(st.none(), dns_subdomain),
    "queue_name": st.one_of(st.none(), label_part),
    "labels": st.dictionaries(qualified_key, label_val_ok, max_size=3),
    "annotations": st.dictionaries(qualified_key, weird_text, max_size=3),
    "pod_labels": st.dictionaries(qualified_key, label_val_ok, max_size=3),
    "pod_annotations": st.dictionaries(qualified_key, weird_text, max_size=3),
    "backoff_limit": st.integers(0, 100),
    "fail_on_exit_codes": st.lists(st.integers(1, 255), max_size=6),
    "ignore_disruptions": st.booleans(),
    "active_deadline_seconds": st.one_of(st.none(), st.integers(1, 2**40)),
    "ttl_seconds_after_finished": st.one_of(st.none(), st.integers(0, 2**31 - 1)),
    "env": st.dictionaries(env_name_ok, weird_text, max_size=4),
    "secret_env": st.dictionaries(
        env_name_ok,
        st.fixed_dictionaries(
            {"name": dns_subdomain, "key": label_part}, optional={"optional": st.booleans()}
        ),
        max_size=3,
    ),
    "secret_env_from": st.lists(dns_subdomain, max_size=2),
    "allow_secret_like_env": st.booleans(),
    "pod_security_profile": st.sampled_from(["restricted", "none"]),
    "run_as_user": st.one_of(st.none(), st.integers(1, 2**31 - 1)),
    "run_as_group": st.one_of(st.none(), st.integers(0, 2**31 - 1)),
    "fs_group": st.one_of(st.none(), st.integers(0, 2**31 - 1)),
    "pending_timeout": st.one_of(st.none(), st.floats(0.1, 1e6)),
    "num_nodes": st.one_of(st.just(1), st.integers(2, 8), st.just(10_000)),
    "rendezvous_port": st.integers(1, 65535),
    "topology": st.one_of(st.none(), qualified_key),
    "topology_mode": st.sampled_from(["required", "preferred"]),
    "log_ranks": st.sampled_from(["all", "first"]),
}

# Values that must be refused (by the model or the builder), never sent.
INVALID: dict[str, st.SearchStrategy[Any]] = {
    "image": any_text,
    "image_pull_policy": st.just("Often"),
    "image_pull_secrets": st.lists(any_text, min_size=1, max_size=2),
    "service_account_name": any_text,
    "gpu_count": st.one_of(
        st.integers(-5, -1), st.floats(0.1, 9.9), st.booleans(), st.integers(2**40, 2**70)
    ),
    "gpu_vendor": st.one_of(
        st.sampled_from(["foo", "NVIDIA", "kubernetes.io/gpu", "requests.example.com/x", "a/b"]),
        any_text,
    ),
    "gpu_type": any_text,
    "gpu_label_scheme": any_text,
    "gpu_label_key": any_text,
    "mig_profile": st.one_of(st.just("1g.10gb+me"), any_text),
    "shm_size": st.one_of(quantity, any_text),
    "node_selector": st.dictionaries(key, label_val, min_size=1, max_size=3),
    "affinity": st.just({"bogus": {}}),
    "tolerations": st.lists(toleration, min_size=1, max_size=3),
    "priority_class_name": any_text,
    "queue_name": any_text,
    "labels": st.dictionaries(key, label_val, min_size=1, max_size=3),
    "annotations": st.dictionaries(key, weird_text, min_size=1, max_size=3),
    "pod_labels": st.dictionaries(key, label_val, min_size=1, max_size=3),
    "pod_annotations": st.dictionaries(key, weird_text, min_size=1, max_size=3),
    "backoff_limit": st.one_of(st.integers(-5, -1), st.integers(2**31, 2**40)),
    "fail_on_exit_codes": st.lists(st.integers(-300, 300), min_size=1, max_size=4),
    "active_deadline_seconds": st.one_of(st.integers(-5, 0), st.integers(2**63, 2**70)),
    "ttl_seconds_after_finished": st.one_of(st.integers(-5, -1), st.integers(2**31, 2**40)),
    "env": st.dictionaries(env_name, weird_text, min_size=1, max_size=4),
    "secret_env": st.dictionaries(env_name, secret_ref, min_size=1, max_size=3),
    "secret_env_from": st.lists(any_text, min_size=1, max_size=2),
    "pod_security_profile": st.just("baseline"),
    "run_as_user": st.one_of(st.just(0), st.integers(-5, -1), st.integers(2**31, 2**40)),
    "run_as_group": st.one_of(st.integers(-5, -1), st.integers(2**31, 2**40)),
    "pod_spec_overrides": bad_pod_overrides,
    "container_overrides": bad_container_overrides,
    "pending_timeout": st.floats(-10, 0),
    "num_nodes": st.one_of(st.integers(-3, 0), st.integers(10_001, 10**9), st.floats(1.5, 2.5)),
    "rendezvous_port": st.one_of(st.integers(-3, 0), st.integers(65536, 10**6)),
    "topology": any_text.filter(lambda t: not t or " " in t or len(t) > 317),
    "topology_mode": any_text,
    "no_such_setting": st.integers(),
}


@st.composite
def settings_data(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly-valid settings (about half the fields set); one example in four corrupts 1-3.

    Half the examples carry overrides, in either security profile.
    """
    data: dict[str, Any] = {}
    for name, strategy in VALID.items():
        # GPU settings are the point: set the count more often than the rest.
        if draw(st.booleans()) or (name == "gpu_count" and draw(st.booleans())):
            data[name] = draw(strategy)
    if draw(st.booleans()):
        data["pod_spec_overrides"], data["container_overrides"] = draw(overrides())
        data["pod_security_profile"] = draw(st.sampled_from(["restricted", "none"]))
    if draw(st.sampled_from([False, False, False, True])):
        corrupt = draw(
            st.lists(st.sampled_from(sorted(INVALID)), min_size=1, max_size=3, unique=True)
        )
        for name in corrupt:
            data[name] = draw(INVALID[name])
    return data


valid_resources = st.fixed_dictionaries(
    {},
    optional={
        "cpu_count": st.one_of(
            st.none(), st.floats(min_value=1e-9, max_value=1e5), st.integers(1, 512)
        ),
        "gpu_count": st.one_of(st.none(), st.integers(0, 64)),
        "memory": st.one_of(st.none(), memory),
    },
)
invalid_resources = st.fixed_dictionaries(
    {},
    optional={
        "cpu_count": st.one_of(st.floats(max_value=0), st.floats(1e7, 1e300)),
        "gpu_count": st.integers(-3, -1),
        "memory": st.one_of(memory_huge, any_text),
    },
)
resources = st.one_of(valid_resources, valid_resources, valid_resources, invalid_resources)
identity = st.fixed_dictionaries(
    {
        "run_id": st.text(min_size=1, max_size=300),
        "step_run_id": st.text(min_size=1, max_size=100),
        "pipeline_step_name": st.text(min_size=1, max_size=300),
        "run_name": weird_text,
        "pipeline": weird_text,
    }
)
environment = st.one_of(
    st.dictionaries(env_name_ok.filter(lambda n: "TOKEN" not in n.upper()), weird_text, max_size=4),
    st.dictionaries(env_name_ok.filter(lambda n: "TOKEN" not in n.upper()), weird_text, max_size=4),
    st.dictionaries(env_name, weird_text, max_size=4),
)
command = st.one_of(
    st.builds(
        lambda first, rest: [first, *rest], any_text.filter(bool), st.lists(any_text, max_size=4)
    ),
    st.just(["python", "-m", "k8s_step_operator.entrypoint"]),
)


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=settings_data(),
    res=resources,
    who=identity,
    env=environment,
    cmd=command,
)
def test_built_jobs_are_accepted_by_the_api_server(
    api_client: Any,
    namespace: str,
    data: dict[str, Any],
    res: dict[str, Any],
    who: dict[str, str],
    env: dict[str, str],
    cmd: list[str],
) -> None:
    try:
        step_settings = parse_settings(data)
        info = StepRunInfo(
            run_id=who["run_id"],
            step_run_id=who["step_run_id"],
            pipeline_step_name=who["pipeline_step_name"],
            run_name=who["run_name"],
            pipeline=PipelineConfiguration(name=who["pipeline"]),
            config=StepConfiguration(resource_settings=ResourceSettings(**res)),
            images={"default": "python:3.11-slim"},
        )
        job = build_job(info, cmd, env, step_settings, namespace=namespace)
    except ConfigurationError as exc:
        # Refused before sending: the error must say which field and what is accepted.
        assert exc.field and exc.accepted
        event(f"refused: {exc.field.split('[')[0]}")
        return
    note(f"job: {job}")
    event("sent to the API server")
    if step_settings.pod_spec_overrides or step_settings.container_overrides:
        event(f"sent with overrides ({step_settings.pod_security_profile} profile)")
    try:
        k8s.BatchV1Api(api_client).create_namespaced_job(namespace, job, dry_run="All")
    except ApiException as exc:
        pytest.fail(f"the API server rejected a Job we built: {exc.status} {exc.body}")
    if step_settings.pod_security_profile == "restricted":
        _check_pod_passes_restricted(api_client, namespace, job)


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    pair=overrides(),
    profile=st.sampled_from(["restricted", "none"]),
    shm=st.sampled_from([None, "1Gi"]),
    gpus=st.sampled_from([0, 1]),
)
def test_overrides_are_refused_or_accepted(
    api_client: Any,
    namespace: str,
    pair: tuple[dict[str, Any], dict[str, Any]],
    profile: str,
    shm: str | None,
    gpus: int,
) -> None:
    """Every override, in both profiles: refused by us, or a Job (and pod) the server accepts."""
    pod_overrides, container_overrides = pair
    data = {
        "image": "python:3.11-slim",
        "pod_security_profile": profile,
        "shm_size": shm,
        "gpu_count": gpus,
        "pod_spec_overrides": pod_overrides,
        "container_overrides": container_overrides,
    }
    info = StepRunInfo(run_id="run", step_run_id="attempt", pipeline_step_name="train")
    try:
        job = build_job(
            info, ["python", "-c", "pass"], {}, parse_settings(data), namespace=namespace
        )
    except ConfigurationError as exc:
        assert exc.field and exc.accepted
        event(f"refused: {exc.field.split('[')[0]}")
        return
    note(f"job: {job}")
    event(f"sent to the API server ({profile} profile)")
    try:
        k8s.BatchV1Api(api_client).create_namespaced_job(namespace, job, dry_run="All")
    except ApiException as exc:
        pytest.fail(f"the API server rejected a Job we built: {exc.status} {exc.body}")
    if profile == "restricted":
        _check_pod_passes_restricted(api_client, namespace, job)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    # Marked, so that finding one in the Job is a leak and not a coincidence.
    values=st.dictionaries(
        env_name_ok, st.builds(lambda t: f"s3cr3t-{t}", weird_text), min_size=1, max_size=4
    ),
    who=identity,
    profile=st.sampled_from(["restricted", "none"]),
)
def test_secret_environment_jobs_and_their_secrets_are_accepted(
    api_client: Any, namespace: str, values: dict[str, str], who: dict[str, str], profile: str
) -> None:
    """A Job with secret environment values, and the Secret that holds them, owned by the Job."""
    info = StepRunInfo(
        run_id=who["run_id"],
        step_run_id=who["step_run_id"],
        pipeline_step_name=who["pipeline_step_name"],
        images={"default": "python:3.11-slim"},
    )
    step_settings = parse_settings({"pod_security_profile": profile})
    try:
        job = build_job(
            info, ["python"], {}, step_settings, namespace=namespace, secret_environment=values
        )
    except ConfigurationError as exc:
        assert exc.field.startswith("secret_environment[")
        event(f"refused: {exc.field.split('[')[0]}")
        return
    assert "s3cr3t-" not in str(job)
    event("sent to the API server")
    try:
        created = k8s.BatchV1Api(api_client).create_namespaced_job(namespace, job, dry_run="All")
        secret = build_env_secret(job, values, job_uid=created.metadata.uid)
        k8s.CoreV1Api(api_client).create_namespaced_secret(namespace, secret, dry_run="All")
    except ApiException as exc:
        pytest.fail(f"the API server rejected what we built: {exc.status} {exc.body}")
    if profile == "restricted":
        _check_pod_passes_restricted(api_client, namespace, job)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    who=identity,
    ranks=st.one_of(st.integers(2, 16), st.just(10_000)),
    gpus=st.integers(0, 8),
    port=st.integers(1, 65535),
    topology=st.one_of(st.none(), qualified_key),
    mode=st.sampled_from(["required", "preferred"]),
    queue=st.sampled_from([None, "gpu"]),
)
def test_jobs_of_several_ranks_and_their_services_are_accepted(
    api_client: Any,
    namespace: str,
    who: dict[str, str],
    ranks: int,
    gpus: int,
    port: int,
    topology: str | None,
    mode: str,
    queue: str | None,
) -> None:
    """An Indexed Job of several ranks, its headless Service, and a rank's pod as the Job
    controller makes it (``<job>-<last index>`` as its hostname) are all valid."""
    info = StepRunInfo(
        run_id=who["run_id"],
        step_run_id=who["step_run_id"],
        pipeline_step_name=who["pipeline_step_name"],
        config=StepConfiguration(resource_settings=ResourceSettings(gpu_count=gpus)),
        images={"default": "python:3.11-slim"},
    )
    data = {"num_nodes": ranks, "rendezvous_port": port, "topology_mode": mode}
    if topology is not None:
        data["topology"] = topology
    if queue is not None:
        data["queue_name"] = queue
    job = build_job(info, ["torchrun", "train.py"], {}, parse_settings(data), namespace=namespace)
    try:
        created = k8s.BatchV1Api(api_client).create_namespaced_job(namespace, job, dry_run="All")
        service = build_rank_service(job, job_uid=created.metadata.uid)
        k8s.CoreV1Api(api_client).create_namespaced_service(namespace, service, dry_run="All")
    except ApiException as exc:
        pytest.fail(f"the API server rejected what we built: {exc.status} {exc.body}")
    # The last rank's pod: the name of its host is the longest any rank has.
    template = job["spec"]["template"]
    spec = {**template["spec"], "hostname": f"{job['metadata']['name']}-{ranks - 1}"}
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{job['metadata']['name']}-{ranks - 1}-x", **template["metadata"]},
        "spec": spec,
    }
    try:
        k8s.CoreV1Api(api_client).create_namespaced_pod(namespace, body, dry_run="All")
    except ApiException as exc:
        pytest.fail(f"a rank's pod was refused: {exc.status} {exc.body}")


def _check_pod_passes_restricted(api_client: Any, namespace: str, job: dict[str, Any]) -> None:
    """The Job's pod, created (dry-run) in a namespace that enforces Pod Security "restricted".

    Pod Security only warns about Jobs; it enforces on pods. References to objects this test
    does not create (ServiceAccount, PriorityClass, RuntimeClass) are dropped: admission would
    refuse those for a reason that is not the pod's shape.
    """
    _enforce_restricted(api_client, namespace)
    template = job["spec"]["template"]
    spec = dict(template["spec"])
    spec.pop("serviceAccountName", None)
    spec.pop("priorityClassName", None)
    spec.pop("runtimeClassName", None)
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{job['metadata']['name']}-pod", **template["metadata"]},
        "spec": spec,
    }
    event("pod checked against Pod Security restricted")
    try:
        k8s.CoreV1Api(api_client).create_namespaced_pod(namespace, body, dry_run="All")
    except ApiException as exc:
        pytest.fail(f"the step's pod was refused: {exc.status} {exc.body}")


_restricted: set[str] = set()


def _enforce_restricted(api_client: Any, namespace: str) -> None:
    if namespace in _restricted:
        return
    k8s.CoreV1Api(api_client).patch_namespace(
        namespace,
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
    )
    _restricted.add(namespace)
