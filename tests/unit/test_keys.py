"""Every key the project sets or reads comes from one module; the rest of ``_job`` has none."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from k8s_step_operator._job import keys
from k8s_step_operator._job.kube_syntax import is_qualified_name

JOB_PACKAGE = Path(keys.__file__).parent


def test_every_key_is_a_valid_qualified_name() -> None:
    for name in keys.__all__:
        value = getattr(keys, name)
        if name.endswith(("_LABEL", "_KEY")) or name.startswith(("ANNOTATION_", "LABEL_")):
            if name == "ANNOTATION_PREFIX":
                continue
            assert is_qualified_name(value), (name, value)


def test_known_values() -> None:
    assert keys.MANAGED_BY_SELECTOR == "app.kubernetes.io/managed-by=k8s-step-operator"
    assert keys.LABEL_STEP_RUN_ID == "k8s-step-operator.io/step-run-id"
    assert keys.KUEUE_QUEUE_LABEL == "kueue.x-k8s.io/queue-name"
    assert keys.KUEUE_PRIORITY_CLASS_LABEL == "kueue.x-k8s.io/priority-class"
    assert keys.JOB_NAME_LABEL == "batch.kubernetes.io/job-name"
    assert keys.JOB_CONTROLLER_UID_LABEL == "batch.kubernetes.io/controller-uid"
    assert keys.LEGACY_JOB_NAME_LABEL == "job-name"
    assert keys.LEGACY_CONTROLLER_UID_LABEL == "controller-uid"


@pytest.mark.parametrize(
    "key",
    [
        "app.kubernetes.io/managed-by",
        "k8s-step-operator.io/run-id",
        "k8s-step-operator.io/anything",
        "kueue.x-k8s.io/queue-name",
        "kueue.x-k8s.io/priority-class",
        "batch.kubernetes.io/job-name",
        "job-name",
        "controller-uid",
        "kubernetes.io/hostname",
        "container.apparmor.security.beta.kubernetes.io/step",
        "seccomp.security.alpha.kubernetes.io/pod",
    ],
)
def test_reserved(key: str) -> None:
    assert keys.is_reserved_key(key)


@pytest.mark.parametrize(
    "key", ["team", "app.kubernetes.io/name", "sim.k8s-step-operator.io/exit-code", "example.com/x"]
)
def test_not_reserved(key: str) -> None:
    assert not keys.is_reserved_key(key)


def test_no_key_literal_outside_the_keys_module() -> None:
    literal = re.compile(
        r"[\"'](k8s-step-operator\.io/|app\.kubernetes\.io/managed-by|kueue\.x-k8s\.io/"
        r"|batch\.kubernetes\.io/|controller-uid|job-name)"
    )
    offenders = [
        f"{path.name}:{n}"
        for path in JOB_PACKAGE.glob("*.py")
        if path.name != "keys.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if literal.search(line)
    ]
    assert offenders == []
