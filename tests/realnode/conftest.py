"""Fixtures of the real-node tests: API clients and a namespace enforcing Pod Security."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def core(api_client: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api_client)


@pytest.fixture
def batch(api_client: Any) -> Any:
    from kubernetes import client

    return client.BatchV1Api(api_client)


@pytest.fixture
def restricted_ns(core: Any, namespace: str) -> str:
    """The test namespace, enforcing Pod Security "restricted" like a production one would."""
    core.patch_namespace(
        namespace,
        {
            "metadata": {
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                }
            }
        },
    )
    return namespace
