"""The pod-spec fields an override may set: ``POD_FIELDS``, one checker per allowed key."""

from __future__ import annotations

from typing import Any

from k8s_step_operator._job.kube_syntax import MAX_INT32, MAX_INT64, is_dns_subdomain
from k8s_step_operator._job.overrides.checkers import (
    Check,
    boolean,
    choice,
    dns_label,
    dns_subdomain,
    fail,
    fields,
    integer,
    ip_address,
    label_value,
    list_of,
    nonempty,
    qualified_name,
    string,
    string_map,
    unique,
)
from k8s_step_operator._job.overrides.containers import init_container_list
from k8s_step_operator._job.overrides.volumes import volume_list

__all__ = ["POD_FIELDS"]


def _search_domain(path: str, value: Any) -> str:
    if not isinstance(value, str) or not is_dns_subdomain(value.removesuffix(".")):
        raise fail(path, "a DNS search domain such as 'svc.cluster.local'", value)
    return value


def _dns_config(path: str, value: Any) -> dict[str, Any]:
    config: dict[str, Any] = fields(
        {
            "nameservers": list_of(ip_address, max_items=3),
            "searches": list_of(_search_domain, max_items=32),
            "options": list_of(fields({"name": nonempty, "value": string}, required=("name",))),
        }
    )(path, value)
    if sum(len(s) for s in config.get("searches", [])) + len(config.get("searches", [])) > 2048:
        raise fail(f"{path}.searches", "search domains of at most 2048 characters in total")
    return config


def _match_expression(path: str, value: Any) -> dict[str, Any]:
    expr: dict[str, Any] = fields(
        {
            "key": qualified_name,
            "operator": choice("In", "NotIn", "Exists", "DoesNotExist"),
            "values": list_of(label_value),
        },
        required=("key", "operator"),
    )(path, value)
    has_values = bool(expr.get("values"))
    if has_values != (expr["operator"] in ("In", "NotIn")):
        raise fail(f"{path}.values", "values with In and NotIn, none with Exists, DoesNotExist")
    return expr


_LABEL_SELECTOR = fields(
    {
        "matchLabels": string_map(qualified_name, label_value),
        "matchExpressions": list_of(_match_expression),
    }
)


def _spread(path: str, value: Any) -> dict[str, Any]:
    constraint: dict[str, Any] = fields(
        {
            "maxSkew": integer(1, MAX_INT32),
            "topologyKey": qualified_name,
            "whenUnsatisfiable": choice("DoNotSchedule", "ScheduleAnyway"),
            "labelSelector": _LABEL_SELECTOR,
            "minDomains": integer(1, MAX_INT32),
            "nodeAffinityPolicy": choice("Honor", "Ignore"),
            "nodeTaintsPolicy": choice("Honor", "Ignore"),
        },
        required=("maxSkew", "topologyKey", "whenUnsatisfiable"),
    )(path, value)
    if "minDomains" in constraint and constraint["whenUnsatisfiable"] != "DoNotSchedule":
        raise fail(f"{path}.minDomains", "minDomains only with whenUnsatisfiable DoNotSchedule")
    return constraint


def _spreads(path: str, value: Any) -> list[Any]:
    items: list[dict[str, Any]] = list_of(_spread)(path, value)
    seen: set[tuple[str, str]] = set()
    for i, item in enumerate(items):
        pair = (item["topologyKey"], item["whenUnsatisfiable"])
        if pair in seen:
            raise fail(f"{path}[{i}]", "each (topologyKey, whenUnsatisfiable) pair once")
        seen.add(pair)
    return items


def _resource_claims(path: str, value: Any) -> list[Any]:
    items: list[dict[str, Any]] = list_of(
        fields(
            {
                "name": dns_label,
                "resourceClaimName": dns_subdomain,
                "resourceClaimTemplateName": dns_subdomain,
            },
            required=("name",),
            one_of=("resourceClaimName", "resourceClaimTemplateName"),
        )
    )(path, value)
    unique(path, items, "name", "each claim name")
    return items


POD_FIELDS: dict[str, Check] = {
    "volumes": volume_list,
    "initContainers": init_container_list,
    "hostAliases": list_of(
        fields(
            {"ip": ip_address, "hostnames": list_of(dns_subdomain, min_items=1)},
            required=("ip", "hostnames"),
        )
    ),
    "dnsPolicy": choice("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"),
    "dnsConfig": _dns_config,
    "topologySpreadConstraints": _spreads,
    "schedulerName": nonempty,
    "runtimeClassName": dns_subdomain,
    "enableServiceLinks": boolean,
    "terminationGracePeriodSeconds": integer(0, MAX_INT64),
    "hostNetwork": boolean,
    "hostname": dns_label,
    "subdomain": dns_label,
    "shareProcessNamespace": boolean,
    "readinessGates": list_of(
        fields({"conditionType": qualified_name}, required=("conditionType",))
    ),
    "resourceClaims": _resource_claims,
    # Steps run Linux containers; a Windows pod forbids the fields the security profile sets.
    "os": fields({"name": choice("linux")}, required=("name",)),
}
