#!/usr/bin/python3
"""The real node's pod network: a CNI plugin that keeps every pod's traffic inside its own netns.

containerd runs it (``node.py up`` installs it as ``cni/bin/k8sso-podnet``) for each pod sandbox.
ADD gives the pod's network namespace one interface holding an address from the configured
loopback-range subnet; there is no link to the host, no bridge and no route, so nothing leaves
the namespace. Addresses are recorded as one file per address in ``dataDir`` (owner: container
id), under a lock. DEL frees them; CHECK confirms one is recorded.

It runs under the system interpreter, outside any virtualenv, and uses the standard library only.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import subprocess
import sys
from typing import Any, NoReturn

SUPPORTED = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]


def fail(code: int, msg: str) -> NoReturn:
    json.dump({"cniVersion": "1.0.0", "code": code, "msg": msg}, sys.stdout)
    sys.exit(1)


def main() -> None:
    cmd = os.environ.get("CNI_COMMAND", "")
    if cmd == "VERSION":
        json.dump({"cniVersion": "1.0.0", "supportedVersions": SUPPORTED}, sys.stdout)
        return
    conf = json.load(sys.stdin)
    version: str = conf.get("cniVersion", "1.0.0")
    data: str = conf["dataDir"]
    net = ipaddress.ip_network(conf["subnet"])
    cid = os.environ["CNI_CONTAINERID"]
    ifname = os.environ.get("CNI_IFNAME", "eth0")
    netns = os.environ.get("CNI_NETNS", "")
    os.makedirs(data, exist_ok=True)
    with open(os.path.join(data, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        taken: dict[str, str] = {}
        for name in os.listdir(data):
            if name.startswith("."):
                continue
            with open(os.path.join(data, name)) as f:
                taken[name] = f.read().strip()
        mine = [ip for ip, owner in taken.items() if owner == cid]
        if cmd == "DEL":
            for ip in mine:
                os.unlink(os.path.join(data, ip))
            if netns and os.path.exists(netns):
                subprocess.run(
                    ["nsenter", "--net=" + netns, "ip", "link", "del", ifname],
                    capture_output=True,
                )
            if version >= "1":
                json.dump({"cniVersion": version}, sys.stdout)
            return
        if cmd == "CHECK":
            if not mine:
                fail(11, "no address recorded for " + cid)
            return
        if cmd != "ADD":
            fail(4, "unsupported command " + cmd)
        if mine:
            ip = mine[0]
        else:
            free = (
                str(a)
                for a in net.hosts()
                if str(a) not in taken and not str(a).endswith((".0", ".1"))
            )
            found = next(free, None)
            if found is None:
                fail(11, "no free address in " + str(net))
            ip = found
            with open(os.path.join(data, ip), "w") as f:
                f.write(cid)

    def ns(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", "--net=" + netns, *argv], capture_output=True, text=True)

    # A dummy link where the kernel has the module; otherwise a veth pair whose two ends both
    # stay inside the pod's namespace.
    r = ns("ip", "link", "add", ifname, "type", "dummy")
    if r.returncode != 0 and "File exists" not in r.stderr:
        r = ns("ip", "link", "add", ifname, "type", "veth", "peer", "name", "podnet0")
        if r.returncode == 0:
            ns("ip", "link", "set", "podnet0", "up")
    if r.returncode != 0 and "File exists" not in r.stderr:
        fail(11, "creating " + ifname + ": " + r.stderr.strip())
    for argv in (
        ["ip", "addr", "add", ip + "/32", "dev", ifname],
        ["ip", "link", "set", ifname, "up"],
    ):
        r = ns(*argv)
        if r.returncode != 0 and "File exists" not in r.stderr:
            fail(11, " ".join(argv) + ": " + r.stderr.strip())
    ipcfg: dict[str, Any] = {"address": ip + "/32", "interface": 0}
    if version < "1":
        ipcfg["version"] = "4"
    json.dump(
        {
            "cniVersion": version,
            "interfaces": [{"name": ifname, "sandbox": netns}],
            "ips": [ipcfg],
            "dns": {},
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
