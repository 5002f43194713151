"""Real containers on the real node: logs, exit codes, OOM kills and GPU scheduling.

These run on the kubelet + containerd node of ``e2e/realnode/node.py`` (or any node labelled
``k8s-step-operator.io/real-node=true`` that has the step images), with the locally built images
of ``e2e/images/build.py``. Pods are plain dicts shaped like the ones the library builds: Pod
Security "restricted" (non-root uid 1000, RuntimeDefault seccomp, no capabilities, no privilege
escalation), and the test namespace enforces that profile, so a pod the library could not run
would be refused here too.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.realnode.pods import (
    H100_SELECTOR,
    PYTHON_IMAGE,
    REAL_LABEL,
    SHELL_IMAGE,
    container,
    create_pod,
    pod_spec,
    terminated,
    wait_until,
)

pytestmark = pytest.mark.realnode


def test_python_step_logs_come_back_through_the_api(core: Any, restricted_ns: str) -> None:
    code = (
        "import os, sys\n"
        "for i in range(3):\n"
        "    print(f'line {i}: ' + os.environ['STEP_GREETING'])\n"
        "print('uid', os.getuid(), 'python', sys.version_info[:2])\n"
        "import k8s_step_operator, kubernetes, pydantic, tenacity, yaml\n"
        "print('imports ok')\n"
    )
    # `python`, not `python3`: step entrypoints are `python -m <module>`.
    ctr = container(PYTHON_IMAGE, ["python", "-c", code])
    create_pod(core, restricted_ns, "logs", pod_spec(ctr))
    pod, state = terminated(core, restricted_ns, "logs")
    assert state.exit_code == 0, state
    assert pod.spec.node_name and pod.status.host_ip == "127.0.0.1"
    logs = core.read_namespaced_pod_log("logs", restricted_ns)
    assert logs.splitlines() == [
        "line 0: hello from the real node",
        "line 1: hello from the real node",
        "line 2: hello from the real node",
        "uid 1000 python (3, 11)",
        "imports ok",
    ]


def test_exit_code_is_reported(core: Any, restricted_ns: str) -> None:
    code = "import sys; print('failing on purpose', file=sys.stderr); sys.exit(3)"
    create_pod(
        core, restricted_ns, "exit3", pod_spec(container(PYTHON_IMAGE, ["python3", "-c", code]))
    )
    pod, state = terminated(core, restricted_ns, "exit3")
    assert state.exit_code == 3
    assert state.reason == "Error"
    assert pod.status.phase == "Failed"
    assert "failing on purpose" in core.read_namespaced_pod_log("exit3", restricted_ns)


def test_memory_limit_kills_with_oom(core: Any, restricted_ns: str) -> None:
    # bytes * n writes every page, so the memory is really used (a bare bytearray is not).
    code = "import time; b = b'x' * (200 * 1024 * 1024); time.sleep(5); print('survived')"
    create_pod(
        core,
        restricted_ns,
        "oom",
        pod_spec(container(PYTHON_IMAGE, ["python3", "-c", code], memory="32Mi")),
    )
    pod, state = terminated(core, restricted_ns, "oom")
    assert state.exit_code == 137
    assert state.reason == "OOMKilled"
    assert pod.status.phase == "Failed"


def test_shell_image_runs_as_non_root(core: Any, restricted_ns: str) -> None:
    cmd = ["/bin/sh", "-c", 'echo "id=$(id -u) greeting=$STEP_GREETING"; touch /tmp/ok && exit 5']
    create_pod(core, restricted_ns, "shell", pod_spec(container(SHELL_IMAGE, cmd, memory="32Mi")))
    _, state = terminated(core, restricted_ns, "shell")
    assert state.exit_code == 5
    logs = core.read_namespaced_pod_log("shell", restricted_ns)
    assert logs.strip() == "id=1000 greeting=hello from the real node"


def test_gpu_job_is_scheduled_on_the_real_node(core: Any, batch: Any, restricted_ns: str) -> None:
    nodes = core.list_node(label_selector=f"{REAL_LABEL}=true").items
    assert nodes, "no node labelled as real"
    assert all(int(n.status.allocatable.get("nvidia.com/gpu", "0")) >= 1 for n in nodes)
    code = "import os; print('gpu step on', os.environ.get('HOSTNAME', '?'))"
    spec = pod_spec(
        container(PYTHON_IMAGE, ["python3", "-c", code], gpus=1), node_selector=H100_SELECTOR
    )
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "gpu-step"},
        "spec": {"backoffLimit": 0, "template": {"metadata": {}, "spec": spec}},
    }
    batch.create_namespaced_job(restricted_ns, job)

    def done() -> Any:
        st = batch.read_namespaced_job_status("gpu-step", restricted_ns).status
        if st.failed:
            raise AssertionError(f"job failed: {st}")
        return st.succeeded

    wait_until("the GPU job to succeed", done)
    pods = core.list_namespaced_pod(restricted_ns, label_selector="job-name=gpu-step").items
    assert len(pods) == 1
    pod = pods[0]
    assert pod.spec.node_name in {n.metadata.name for n in nodes}
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    logs = core.read_namespaced_pod_log(pod.metadata.name, restricted_ns)
    assert logs.strip() == f"gpu step on {pod.metadata.name}"


def test_missing_image_is_never_pulled_from_outside(core: Any, restricted_ns: str) -> None:
    # The node's containerd sends registry requests to a closed loopback proxy: a missing
    # image fails fast with ErrImagePull and no traffic leaves the machine. The .invalid name
    # could not resolve anyway.
    image = "registry.invalid/k8sso-never-pulled:1"
    ctr = container(image, ["true"], memory="32Mi")
    ctr["imagePullPolicy"] = "IfNotPresent"
    create_pod(core, restricted_ns, "nopull", pod_spec(ctr))

    def waiting() -> Any:
        pod = core.read_namespaced_pod("nopull", restricted_ns)
        for cs in pod.status.container_statuses or []:
            w = cs.state.waiting if cs.state else None
            # ImagePullBackOff in between carries only "Back-off pulling image".
            if w and w.reason == "ErrImagePull" and w.message:
                return w
        return None

    w = wait_until("the pull of a missing image to fail", waiting, timeout=60)
    assert "proxyconnect tcp: dial tcp 127.0.0.1:9" in w.message


def test_gpu_capacity_is_advertised_again_when_lost(core: Any) -> None:
    # The kubelet drops extended resources when it registers anew; the node's status keeper
    # (e2e/realnode/node.py) must put nvidia.com/gpu back. Removing it by hand stands in for
    # that without disturbing the kubelet.
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    if not (repo / ".cluster" / "realnode" / "run" / "status-keeper.pid").exists():
        pytest.skip("needs the local real node of e2e/realnode/node.py (its status keeper)")
    nodes = core.list_node(label_selector=f"{REAL_LABEL}=true").items
    assert nodes
    name = nodes[0].metadata.name
    want = nodes[0].status.capacity["nvidia.com/gpu"]
    # A list body makes the client send a JSON patch.
    core.patch_node_status(name, [{"op": "remove", "path": "/status/capacity/nvidia.com~1gpu"}])
    lost_at = time.monotonic()
    wait_until(
        "nvidia.com/gpu to be advertised again",
        lambda: core.read_node_status(name).status.capacity.get("nvidia.com/gpu") == want,
        timeout=30,
    )
    assert time.monotonic() - lost_at < 30


def test_memory_backed_shm_volume_is_usable(core: Any, restricted_ns: str) -> None:
    # What the library mounts at /dev/shm for data loaders (settings.shm_size).
    code = (
        "import os, multiprocessing as mp\n"
        "open('/dev/shm/probe', 'w').write('x' * 4096)\n"
        "st = os.statvfs('/dev/shm')\n"
        "print('shm MiB', st.f_blocks * st.f_frsize >> 20)\n"
        "q = mp.Queue(); q.put('through a queue'); print(q.get())\n"
    )
    ctr = container(PYTHON_IMAGE, ["python3", "-c", code])
    ctr["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    spec = pod_spec(ctr)
    spec["volumes"] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}]
    create_pod(core, restricted_ns, "shm", spec)
    _, state = terminated(core, restricted_ns, "shm")
    assert state.exit_code == 0, state
    logs = core.read_namespaced_pod_log("shm", restricted_ns)
    assert logs.splitlines() == ["shm MiB 64", "through a queue"]
