"""The arguments every step-describing subcommand shares, and the step they describe."""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path
from typing import Any, NoReturn

import yaml
from pydantic import ValidationError

from k8s_step_operator._errors import ConfigurationError, configuration_error
from k8s_step_operator._job.settings import parse_settings
from k8s_step_operator._step_operator_api.resource_settings import ResourceSettings
from k8s_step_operator._step_operator_api.step_run_info import (
    PipelineConfiguration,
    StepConfiguration,
    StepRunInfo,
)
from k8s_step_operator.cli._outcome import EXIT_USAGE


class _Parser(argparse.ArgumentParser):
    """Reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_step_arguments(p: argparse.ArgumentParser, *, run_id_default: str | None) -> None:
    """Arguments that describe a step: shared by ``render`` and ``run``."""
    p.add_argument("--settings", metavar="FILE", help="YAML file of step settings (flat mapping)")
    p.add_argument("--image", help="container image of the step")
    p.add_argument(
        "-n",
        "--namespace",
        help="namespace of the Job (default: the settings file's, else the kubeconfig "
        "context's, else the pod's; render without a kubeconfig: default)",
    )
    p.add_argument("--gpus", type=int, metavar="N", help="number of GPUs (or MIG slices)")
    p.add_argument(
        "--nodes", type=int, metavar="N", help="nodes (pods) the step runs on, each with --gpus"
    )
    p.add_argument("--gpu-type", help="GPU model, in the label scheme's vocabulary")
    p.add_argument("--gpu-vendor", help="nvidia, amd, intel, or a resource key")
    p.add_argument("--mig-profile", help="NVIDIA MIG profile, e.g. 1g.5gb")
    p.add_argument("--cpu", type=float, metavar="CORES", help="CPU cores to request")
    p.add_argument("--memory", help="memory, a size such as 16Gi or 16GiB (request and limit)")
    p.add_argument("--step-name", default="step", help="step name (default: step)")
    p.add_argument(
        "--run-id",
        default=run_id_default,
        help=f"pipeline run id (default: {run_id_default or 'a new one for every call'})",
    )
    p.add_argument("--run-name", default="", help="pipeline run name")
    p.add_argument("--step-run-id", default="", help="step run id (default: the run id)")
    p.add_argument("--pipeline-name", default="", help="pipeline name")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="plain environment variable (repeatable; secrets go in secret_env)",
    )
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument("command", nargs="*", help="the step's command, after --")


def _load_settings_file(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            "--settings", "a readable file", path, detail=exc.strerror or ""
        ) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise ConfigurationError("--settings", "a YAML mapping", path, detail=first) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError("--settings", "a YAML mapping of settings", path)
    return data


# What only means something for a step that asks for GPUs, by flag.
_GPU_FLAGS = ("gpu_type", "mig_profile", "gpu_vendor")


def _check_gpu_flags(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """Refuse a GPU model, MIG profile or vendor for a step that asks for no GPU.

    Without a GPU count the Job requests no GPU, and the builder leaves the model out (a
    component's ``gpu_type`` is for its GPU steps): the step would land on any node, CPU-only.
    """
    count = data.get("gpu_count")
    if count not in (None, 0, "0"):
        return
    for key in _GPU_FLAGS:
        if data.get(key) is None:
            continue
        by_flag = getattr(args, key) is not None
        field = f"--{key.replace('_', '-')}" if by_flag else f"settings.{key}"
        raise ConfigurationError(
            field,
            "a GPU count as well (--gpus N, or gpu_count in the --settings file): without one "
            "the Job asks for no GPU and may run on any node",
            data[key],
        )


def _step_from_args(
    args: argparse.Namespace,
) -> tuple[StepRunInfo, list[str], dict[str, str], dict[str, Any]]:
    """The step, its command, its environment and its settings from the shared arguments."""
    data = _load_settings_file(args.settings) if args.settings else {}
    for flag, key in (
        ("image", "image"),
        ("namespace", "namespace"),
        ("gpus", "gpu_count"),
        ("nodes", "num_nodes"),
        ("gpu_type", "gpu_type"),
        ("gpu_vendor", "gpu_vendor"),
        ("mig_profile", "mig_profile"),
    ):
        value = getattr(args, flag)
        if value is not None:
            data[key] = value
    # A mistyped key or value of the file, or a bad flag value, before what is missing.
    parse_settings(data)
    _check_gpu_flags(args, data)
    if data.get("image") is None:
        raise ConfigurationError(
            "--image", "the step's container image: --image IMAGE, or image: in the --settings file"
        )
    try:
        resources = ResourceSettings(cpu_count=args.cpu, memory=args.memory)
    except ValidationError as exc:
        error = configuration_error(exc, "resources")
        flag = "--cpu" if error.field.endswith("cpu_count") else "--memory"
        raise ConfigurationError(flag, error.accepted, error.value) from exc
    environment: dict[str, str] = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigurationError("--env", "NAME=VALUE", item)
        environment[name] = value
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise ConfigurationError("command", "the step's command after --", None)
    run_id = args.run_id or f"cli-{uuid.uuid4().hex[:12]}"
    info = StepRunInfo(
        step_run_id=args.step_run_id or run_id,
        run_id=run_id,
        run_name=args.run_name,
        pipeline_step_name=args.step_name,
        pipeline=PipelineConfiguration(name=args.pipeline_name),
        config=StepConfiguration(name=args.step_name, resource_settings=resources),
    )
    return info, command, environment, data
