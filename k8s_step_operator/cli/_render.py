"""``render``: print the Job a set of settings produces, without contacting any cluster."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from k8s_step_operator._errors import ConfigurationError
from k8s_step_operator._job.builder import build_job
from k8s_step_operator._job.settings import parse_settings
from k8s_step_operator._kube.client import load_client
from k8s_step_operator.cli._arguments import _add_step_arguments, _step_from_args

__all__ = ["cmd_render"]


def _add_render(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "render",
        help="print the Job a set of settings produces, as YAML or JSON",
        description="Print the Job that the given settings produce. Nothing is sent: the "
        "kubeconfig is read only for its context's namespace.",
    )
    _add_step_arguments(p, run_id_default="render")
    p.add_argument(
        "-o",
        "--output",
        choices=("yaml", "json"),
        default="yaml",
        help="output format (default: yaml)",
    )
    p.set_defaults(func=cmd_render)


def _offline_namespace(args: argparse.Namespace) -> str:
    """The namespace kubectl would use, read from the kubeconfig without contacting the server.

    Without a kubeconfig (and outside a pod) that is ``default``; a kubeconfig or context named
    on the command line must exist.
    """
    try:
        loaded = load_client(args.kubeconfig, args.context)
    except ConfigurationError:
        if args.kubeconfig or args.context:
            raise
        return "default"
    loaded.api_client.close()
    return loaded.namespace


def cmd_render(args: argparse.Namespace) -> int:
    """Print the Job for the settings and flags in ``args`` as YAML or JSON."""
    info, command, environment, data = _step_from_args(args)
    settings = parse_settings(data)  # a clear error naming the field before the kubeconfig
    if settings.namespace is None:
        data["namespace"] = _offline_namespace(args)
        settings = parse_settings(data)
    job = build_job(info, command, environment, settings)
    if args.output == "json":
        sys.stdout.write(json.dumps(job, indent=2) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(job, sort_keys=False, allow_unicode=True))
    return 0
