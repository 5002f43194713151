"""The real node's pod network as configuration: what it listens on and where pods may go.

These read the files ``e2e/realnode/network.py`` and ``node.py`` would write, without starting
anything: every listener on loopback or the gateway, no default route for pods, no sysctl that
weakens loopback, the guard rules in place.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import yaml

REALNODE = Path(__file__).resolve().parents[2] / "e2e" / "realnode"


@pytest.fixture(scope="module")
def network() -> ModuleType:
    sys.path.insert(0, str(REALNODE))
    try:
        import network as mod
    finally:
        sys.path.remove(str(REALNODE))
    return mod


PORTS = {
    "coredns": 40001,
    "coredns-health": 40002,
    "coredns-ready": 40003,
    "kube-proxy-healthz": 40004,
    "kube-proxy-metrics": 40005,
}


def test_coredns_serves_every_zone_on_its_own_port_only(network: ModuleType) -> None:
    text = network.corefile(PORTS)
    keys = text.splitlines()[0].rstrip(" {").split()
    # A zone without a port would be served on 53 (found the hard way).
    assert keys == [f"{z}:40001" for z in ("cluster.local", "in-addr.arpa", "ip6.arpa")]
    assert "bind 127.0.0.1 10.244.0.1" in text
    assert "health 127.0.0.1:40002" in text and "ready 127.0.0.1:40003" in text
    # No upstream resolver: nothing is forwarded off the machine.
    assert "forward" not in text


STATE = SimpleNamespace(
    ports={"kube-apiserver": 6443, "seaweedfs-s3": 7000, "zenml-server": 7001},
    server="https://127.0.0.1:6443",
)


def test_kube_proxy_listens_on_loopback_and_leaves_loopback_alone(network: ModuleType) -> None:
    cfg: dict[str, Any] = yaml.safe_load(network.kube_proxy_config(STATE, PORTS, "node-x"))
    assert cfg["mode"] == "iptables"
    assert cfg["healthzBindAddress"].startswith("127.0.0.1:")
    assert cfg["metricsBindAddress"].startswith("127.0.0.1:")
    assert cfg["iptables"]["localhostNodePorts"] is False  # no route_localnet=1
    assert cfg["nodePortAddresses"] == ["10.244.0.1/32"]
    assert cfg["conntrack"]["maxPerCore"] == 0 and cfg["conntrack"]["min"] == 0


def test_guards_allow_only_the_published_ports_and_drop_the_rest(network: ModuleType) -> None:
    rules = network.guard_rules([6443, 7000], 40001)
    flat = {chain: [" ".join(r) for r in rs] for chain, rs in rules.items()}
    assert "--dports 6443,7000,40001" in " ".join(flat["K8SSO-POD-INPUT"])
    assert flat["K8SSO-POD-INPUT"][-1].startswith("-j REJECT")
    assert flat["K8SSO-POD-FORWARD"] == ["-o k8sso0 -j RETURN", "-j DROP"]
    egress = flat["K8SSO-POD-EGRESS"]
    assert egress[:2] == ["-o k8sso0 -j RETURN", "-o lo -j RETURN"]
    assert {r for r in egress[2:]} == {
        "-s 10.244.0.0/16 -j DROP",
        "-d 10.244.0.0/16 -j DROP",
        "-s 10.96.0.0/16 -j DROP",
        "-d 10.96.0.0/16 -j DROP",
    }


def test_the_ranges_are_private_and_apart(network: ModuleType) -> None:
    pods, services = network.CLUSTER_CIDR, network.SERVICE_CIDR
    assert pods.is_private and services.is_private and not pods.overlaps(services)
    assert network.NODE_CIDR.subnet_of(pods)
    assert ipaddress.ip_address(network.GATEWAY) in network.NODE_CIDR
    assert ipaddress.ip_address(network.DNS_SERVICE_IP) in services
    # Every Service that points at the host is reached through the gateway forwarder.
    assert {s.name for s in network.GATEWAY_SERVICES} == {"kubernetes", "seaweedfs", "zenml"}
    assert re.fullmatch(
        r"http://zenml\.k8sso-system\.svc\.cluster\.local:8080", network.service_url("zenml")
    )
