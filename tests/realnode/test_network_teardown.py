"""The pod network's host side comes up and goes away whole, checked in a scratch namespace.

``network.setup_host``, ``install_guards`` and ``down`` run inside a network namespace of this
test's own (with a state directory of its own), so the machine's network and a running real node
are not touched: after ``down`` nothing of it is left (no bridge, route, iptables chain or rule,
process), and the sysctl it changed is back to what it was. ``.ci/run`` checks the same on the
machine itself after ``make cluster-down`` (``network.py leftovers``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("iptables") is None,
    reason="needs root, ip and iptables (network namespaces)",
)

SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import network
flag = 'net/bridge/bridge-nf-call-iptables'
before = network._read_sysctl(flag)
network._write_sysctl(flag, '0')
network.setup_host()
network.setup_host()  # idempotent
network.install_guards([1111, 2222], 3333)
network.install_guards([1111, 2222], 3333)
during = {'left': network.leftovers(), 'flag': network._read_sysctl(flag)}
network.down(None)
after = {'left': network.leftovers(), 'flag': network._read_sysctl(flag)}
network._write_sysctl(flag, before)
print(json.dumps({'during': during, 'after': after}))
"""


def test_down_removes_everything_up_added(tmp_path: Path) -> None:
    ns = f"k8sso-t-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        r = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                "-c",
                SCRIPT,
                str(REPO / "e2e" / "realnode"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "K8SSO_CLUSTER_DIR": str(tmp_path / "cluster")},
            check=False,
        )
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    during = "\n".join(out["during"]["left"])
    assert "bridge k8sso0" in during
    assert "unreachable 10.244.0.0/16" in during and "unreachable 10.96.0.0/16" in during
    assert "K8SSO-POD-INPUT" in during and "K8SSO-POD-FORWARD" in during
    assert out["during"]["flag"] == "1"
    assert out["after"] == {"left": [], "flag": "0"}, r.stderr
