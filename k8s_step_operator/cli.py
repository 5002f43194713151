r"""The ``k8s-step-operator`` command.

One function per subcommand (``cmd_<name>``) and one that declares its arguments
(``_add_<name>``); ``main`` wires them up. Errors are one line on stderr and exit code 2.

``render`` prints the Job that a set of settings produces, without contacting any cluster::

    k8s-step-operator render --settings step.yaml --gpus 2 --gpu-type NVIDIA-H100-80GB-HBM3 \\
        --image registry.example/train:1 -- python -m train
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml
from pydantic import ValidationError

from k8s_step_operator._validation import configuration_error
from k8s_step_operator.errors import ConfigurationError
from k8s_step_operator.job_builder import build_job
from k8s_step_operator.resource_settings import ResourceSettings
from k8s_step_operator.settings import parse_settings
from k8s_step_operator.step_run_info import (
    PipelineConfiguration,
    StepConfiguration,
    StepRunInfo,
)

__all__ = ["build_parser", "cmd_render", "main"]

Command = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """Reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_render(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "render",
        help="print the Job a set of settings produces, as YAML",
        description="Print the Job that the given settings produce, as YAML. Nothing is sent.",
    )
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
    p.add_argument("--run-id", default="render", help="pipeline run id (default: render)")
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
    p.set_defaults(func=cmd_render)


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


def cmd_render(args: argparse.Namespace) -> int:
    """Print the Job for the settings and flags in ``args`` as YAML."""
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
    settings = parse_settings(data)
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
    info = StepRunInfo(
        step_run_id=args.step_run_id or args.run_id,
        run_id=args.run_id,
        run_name=args.run_name,
        pipeline_step_name=args.step_name,
        pipeline=PipelineConfiguration(name=args.pipeline_name),
        config=StepConfiguration(name=args.step_name, resource_settings=resources),
    )
    job = build_job(info, command, environment, settings)
    sys.stdout.write(yaml.safe_dump(job, sort_keys=False, allow_unicode=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = _Parser(prog="k8s-step-operator", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="subcommand", metavar="COMMAND", parser_class=_Parser)
    _add_render(subparsers)
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
