"""``k8s-step-operator doctor``: its arguments, and the run from parsed arguments to the report.

Failures are raised, not printed: the command line turns every ``ConfigurationError`` and
``ApiError`` into one line and an exit status, the same way for every subcommand.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from k8s_step_operator._doctor.probe import run_doctor
from k8s_step_operator._doctor.report import format_report
from k8s_step_operator._kube.client import load_client

__all__ = ["add_parser", "main"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``doctor`` subcommand to an ``argparse`` subparsers object.

    The parser's default ``func`` is ``main``.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "doctor",
        help="check permissions, GPU inventory, Pod Security, GPU quota and Kueue queues",
        description=(
            "Check, as the identity the pipeline uses, every permission the step operator "
            "needs in a namespace, and show the GPU nodes, the namespace's Pod Security level, "
            "its GPU quota and its Kueue LocalQueues with their ClusterQueues' GPU quota."
        ),
        epilog="exit status: 0 every required permission is granted; 1 one is missing, the "
        "namespace is unusable, or the API server could not be asked; 2 bad input (a flag, the "
        "kubeconfig or its context).",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        help="namespace of the steps (default: the kubeconfig context's, or the pod's)",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument(
        "--in-cluster", action="store_true", help="use the pod's ServiceAccount, not a kubeconfig"
    )
    parser.add_argument(
        "--as",
        dest="as_user",
        metavar="USER",
        help="impersonate USER, e.g. system:serviceaccount:NS:NAME (needs impersonate rights)",
    )
    parser.add_argument(
        "--kueue",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="require the Kueue permissions (default: check them as optional when Kueue is "
        "served); --no-kueue skips Kueue altogether",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help="report format (default: text)",
    )
    parser.add_argument(
        "--json", dest="output", action="store_const", const="json", help="same as -o json"
    )
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    """Run doctor from parsed arguments and print the report.

    Returns:
        0 when every required permission is granted and the namespace is usable, else 1.

    Raises:
        ConfigurationError: No usable kubeconfig or context, or an invalid namespace.
        ApiError: The API server could not be asked.
    """
    loaded = load_client(args.kubeconfig, args.context, True if args.in_cluster else None)
    namespace = args.namespace or loaded.namespace
    with loaded.api_client as api_client:
        if args.as_user:
            api_client.set_default_header("Impersonate-User", args.as_user)
        report = run_doctor(api_client, namespace, kueue=args.kueue)
    if args.output == "json":
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        print(format_report(report))
    return 0 if report.ok else 1
