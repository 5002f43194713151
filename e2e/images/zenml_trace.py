"""Timing and API requests of ZenML's step launcher, in the ZenML image; off unless asked for.

Installed in the ZenML image as ``k8sso_zenml_trace`` and imported at every interpreter start
by a ``.pth`` file: with ``K8SSO_ZENML_TRACE`` unset it does nothing. Set (the benchmark sets it
through the pipeline's ``environment``, which ZenML hands its step pods), it patches, as they are
imported, ZenML's step launcher and the Kubernetes client's ``ApiClient.call_api``, and prints
one line per step run that goes through a step operator::

    K8SSO-TRACE {"step_run_id": ..., "operator": "KubernetesJobStepOperator",
                 "submit_at": <time.time()>, "returned_at": <time.time()>, "requests": N}

``submit_at`` is when the launcher calls the step operator (right after ZenML computed the
step's environment), ``returned_at`` when the step operator's ``wait`` has returned (ZenML then
finalizes the step), ``requests`` the Kubernetes API requests the process made in between
(watches and log streams count once). Every
pod on one machine shares its clock, so the benchmark sets these against its own watch.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

ENV = "K8SSO_ZENML_TRACE"
PREFIX = "K8SSO-TRACE "

_lock = threading.Lock()
_requests = 0


def _count_requests(module: ModuleType) -> None:
    cls = module.ApiClient
    original = cls.call_api

    def call_api(self: Any, *args: Any, **kwargs: Any) -> Any:
        global _requests
        with _lock:
            _requests += 1
        return original(self, *args, **kwargs)

    cls.call_api = call_api


# The step run being launched in this thread, and when.
state = threading.local()


def _time_environment(module: ModuleType) -> None:
    """The step operator is called right after ZenML computes the step's environment (which may
    ask the ZenML server for a token): that is when ``submit_at`` is taken."""
    original = module.get_runtime_environment

    def get_runtime_environment(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        record = getattr(state, "record", None)
        if record is not None and "returned_at" not in record:
            record["submit_at"] = time.time()
        return result

    module.get_runtime_environment = get_runtime_environment


def _time_launcher(module: ModuleType) -> None:
    cls = module.StepLauncher
    run = cls._run_step_with_step_operator
    finalize = cls._finalize_remote_step

    def run_with_operator(self: Any, *args: Any, **kwargs: Any) -> Any:
        info = kwargs["step_run_info"] if "step_run_info" in kwargs else args[1]
        state.record = {
            "step_run_id": str(info.step_run_id),
            "step": info.pipeline_step_name,
            "submit_at": time.time(),
            "requests_before": _requests,
        }
        return run(self, *args, **kwargs)

    def finalize_remote_step(self: Any, status: Any, step_run_info: Any) -> Any:
        record = getattr(state, "record", None)
        if record is not None:
            record["returned_at"] = time.time()
            record["requests"] = _requests - record.pop("requests_before")
            record["status"] = str(getattr(status, "value", status))
            operators = self._stack.step_operators.values()
            record["operators"] = sorted(type(o).__name__ for o in operators)
            print(PREFIX + json.dumps(record), flush=True)
        return finalize(self, status, step_run_info)

    cls._run_step_with_step_operator = run_with_operator
    cls._finalize_remote_step = finalize_remote_step


_PATCHES: dict[str, Callable[[ModuleType], None]] = {
    "kubernetes.client.api_client": _count_requests,
    "zenml.utils.env_utils": _time_environment,
    "zenml.orchestrators.step_launcher": _time_launcher,
}


class _Loader(importlib.abc.Loader):
    def __init__(self, loader: Any, patch: Callable[[ModuleType], None]) -> None:
        self.loader = loader
        self.patch = patch

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        self.patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Sequence[str] | None, target: Any = None) -> Any:
        patch = _PATCHES.get(name)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader, patch)
        return spec


if os.environ.get(ENV):
    sys.meta_path.insert(0, _Finder())
