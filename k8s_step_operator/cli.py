r"""The ``k8s-step-operator`` command.

One function per subcommand (``cmd_<name>``) and one that declares its arguments
(``_add_<name>``); ``main`` wires them up. Bad input is one line on stderr and exit code 2.

``run`` launches a step synchronously, shows its phases with the elapsed time on stderr and its
output on stdout, and exits with the step's exit code::

    k8s-step-operator run --gpus 2 --gpu-type NVIDIA-H100-80GB-HBM3 --image IMAGE -- python train.py

``render`` prints the Job that a set of settings produces, without contacting any cluster::

    k8s-step-operator render --settings step.yaml --gpus 2 --gpu-type NVIDIA-H100-80GB-HBM3 \\
        --image registry.example/train:1 -- python -m train
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml
from pydantic import ValidationError

from k8s_step_operator._api.resource_settings import ResourceSettings
from k8s_step_operator._api.step_run_info import (
    PipelineConfiguration,
    StepConfiguration,
    StepRunInfo,
)
from k8s_step_operator._doctor import doctor
from k8s_step_operator._errors import (
    ApiError,
    ConfigurationError,
    StepError,
    StepFailedError,
    configuration_error,
)
from k8s_step_operator._job.builder import build_job
from k8s_step_operator._job.settings import parse_settings

__all__ = ["build_parser", "cmd_render", "cmd_run", "main"]

Command = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """Reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_step_arguments(p: argparse.ArgumentParser, *, run_id_default: str | None) -> None:
    """Arguments that describe a step: shared by ``render`` and ``run``."""
    p.add_argument("--settings", metavar="FILE", help="YAML file of step settings (flat mapping)")
    p.add_argument("--image", help="container image of the step")
    p.add_argument("--namespace", help="namespace of the Job")
    p.add_argument("--gpus", type=int, metavar="N", help="number of GPUs (or MIG slices)")
    p.add_argument("--gpu-type", help="GPU model, in the label scheme's vocabulary")
    p.add_argument("--gpu-vendor", help="nvidia, amd, intel, or a resource key")
    p.add_argument("--mig-profile", help="NVIDIA MIG profile, e.g. 1g.5gb")
    p.add_argument("--cpu", type=float, metavar="CORES", help="CPU cores to request")
    p.add_argument("--memory", help="memory, e.g. 16GB or 512MiB")
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
    p.add_argument("command", nargs="*", help="the step's command, after --")


def _add_render(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "render",
        help="print the Job a set of settings produces, as YAML",
        description="Print the Job that the given settings produce, as YAML. Nothing is sent.",
    )
    _add_step_arguments(p, run_id_default="render")
    p.set_defaults(func=cmd_render)


def _add_run(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="run one step as a Job and wait for it, streaming its output",
        description="Run the command as a Kubernetes Job and wait until it ends. The phases are "
        "shown on stderr with the elapsed time, the step's output on stdout; the exit status is "
        "the step's. Ctrl-C deletes the Job before exiting.",
    )
    _add_step_arguments(p, run_id_default=None)
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument(
        "--pending-timeout",
        type=float,
        metavar="SECONDS",
        help="fail when no node takes the step within this time (default: 600)",
    )
    p.add_argument("--no-logs", action="store_true", help="do not stream the step's output")
    p.set_defaults(func=cmd_run)


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


def _step_from_args(
    args: argparse.Namespace,
) -> tuple[StepRunInfo, list[str], dict[str, str], dict[str, Any]]:
    """The step, its command, its environment and its settings from the shared arguments."""
    data = _load_settings_file(args.settings) if args.settings else {}
    for flag, key in (
        ("image", "image"),
        ("namespace", "namespace"),
        ("gpus", "gpu_count"),
        ("gpu_type", "gpu_type"),
        ("gpu_vendor", "gpu_vendor"),
        ("mig_profile", "mig_profile"),
    ):
        value = getattr(args, flag)
        if value is not None:
            data[key] = value
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


def cmd_render(args: argparse.Namespace) -> int:
    """Print the Job for the settings and flags in ``args`` as YAML."""
    info, command, environment, data = _step_from_args(args)
    job = build_job(info, command, environment, parse_settings(data))
    sys.stdout.write(yaml.safe_dump(job, sort_keys=False, allow_unicode=True))
    return 0


class _PhaseLines(logging.Handler):
    """Shows the operator's lines (phases, problems) on stderr with the elapsed time."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.start = time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        elapsed = time.monotonic() - self.start
        print(f"[{elapsed:7.1f}s] {record.getMessage()}", file=sys.stderr, flush=True)


class _StepLines(logging.Handler):
    """Writes the step's own output to stdout, as it prints it."""

    def emit(self, record: logging.LogRecord) -> None:
        print(record.getMessage(), flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    """Launch the step and wait; the exit status is the step's."""
    from k8s_step_operator._job.settings import KubernetesJobStepOperatorConfig
    from k8s_step_operator._operator import KubernetesJobStepOperator

    info, command, environment, data = _step_from_args(args)
    if args.pending_timeout is not None:
        data["pending_timeout"] = args.pending_timeout
    if args.no_logs:
        data["stream_logs"] = False
    parse_settings(data)  # a clear error naming the field before anything else
    config = KubernetesJobStepOperatorConfig(
        kubeconfig_path=args.kubeconfig, kubernetes_context=args.context, **data
    )
    operator_log = logging.getLogger("k8s_step_operator")
    step_log = logging.getLogger("k8s_step_operator.step")
    operator_log.setLevel(logging.INFO)
    operator_log.addHandler(_PhaseLines())
    step_log.addHandler(_StepLines())
    step_log.propagate = False
    try:
        KubernetesJobStepOperator("cli", config=config).launch(info, command, environment)
    except StepFailedError as exc:
        code = exc.exit_code if exc.exit_code and 0 < exc.exit_code < 256 else 1
        print(f"k8s-step-operator run: {_first_line(exc)}", file=sys.stderr)
        return code
    except (StepError, ApiError) as exc:
        print(f"k8s-step-operator run: {_first_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("k8s-step-operator run: cancelled; the Job was deleted", file=sys.stderr)
        return 130
    return 0


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = _Parser(
        prog="k8s-step-operator",
        description="Run machine-learning pipeline steps as Kubernetes Jobs on GPU nodes.",
    )
    subparsers = parser.add_subparsers(dest="subcommand", metavar="COMMAND", parser_class=_Parser)
    _add_run(subparsers)
    _add_render(subparsers)
    doctor.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    func: Command | None = getattr(args, "func", None)
    if func is None:
        parser.print_usage(sys.stderr)
        return 2
    try:
        return func(args)
    except ConfigurationError as exc:
        print(f"k8s-step-operator {args.subcommand}: error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        error = configuration_error(exc, "settings", secret_fields=("secret_env",))
        print(f"k8s-step-operator {args.subcommand}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
