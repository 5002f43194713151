"""The typed reads of Kubernetes objects: a missing field reads as empty, never raises."""

from __future__ import annotations

from typing import Any

from k8s_step_operator._objects import conditions_of, labels_of, name_of
from k8s_step_operator._runner.pods import (
    conditions_by_type,
    container_state,
    container_statuses,
    pod_finished,
)


def test_metadata_reads_fall_back_to_empty() -> None:
    assert name_of({}) == ""
    assert name_of({"metadata": {}}) == ""
    assert name_of({"metadata": {"name": "a"}}) == "a"
    assert labels_of({}) == {}
    assert labels_of({"metadata": {"labels": {"k": "v"}}}) == {"k": "v"}


def test_conditions_fall_back_to_empty_and_skip_what_is_not_a_condition() -> None:
    assert conditions_of({}) == []
    assert conditions_of({"status": {}}) == []
    assert conditions_of({"status": {"conditions": None}}) == []
    ready = {"type": "Ready", "status": "True"}
    job: dict[str, Any] = {"status": {"conditions": [ready, "junk"]}}
    assert conditions_by_type(job) == {"Ready": ready}
    assert conditions_by_type({}) == {}


def test_container_statuses_list_init_containers_first() -> None:
    pod: dict[str, Any] = {
        "status": {
            "containerStatuses": [{"name": "main", "state": {"running": {}}}],
            "initContainerStatuses": [{"name": "init", "state": {"terminated": {"exitCode": 0}}}],
        }
    }
    assert [cs["name"] for cs in container_statuses(pod)] == ["init", "main"]
    assert container_statuses({}) == []
    assert container_statuses({"status": {"containerStatuses": None}}) == []


def test_container_state_is_none_without_a_status_and_empty_without_a_state() -> None:
    pod: dict[str, Any] = {"status": {"containerStatuses": [{"name": "main"}]}}
    assert container_state(pod, "main") == {}
    assert container_state(pod, "other") is None
    assert container_state({}, "main") is None


def test_pod_finished_reads_the_phase() -> None:
    assert pod_finished({"status": {"phase": "Failed"}})
    assert pod_finished({"status": {"phase": "Succeeded"}})
    assert not pod_finished({"status": {"phase": "Running"}})
    assert not pod_finished({})
