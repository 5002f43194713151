"""``run``: launch one step as a Job, follow it on the console, and exit with its status."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from typing import Any

from k8s_step_operator._errors import ApiError, ConfigurationError, StepError, StepFailedError
from k8s_step_operator._job.builder import build_job
from k8s_step_operator._job.settings import parse_settings
from k8s_step_operator._kube.client import load_client
from k8s_step_operator._runner.signals import Terminated, terminations_raise
from k8s_step_operator.cli._arguments import _add_step_arguments, _step_from_args
from k8s_step_operator.cli._console import Console
from k8s_step_operator.cli._logging import _OPERATOR_LOGGER, _console_logging
from k8s_step_operator.cli._outcome import (
    EXIT_NOT_RUN,
    PROG,
    _describe_api,
    _describe_config,
    _exit_codes_epilog,
    _first_line,
    exit_code,
)

__all__ = ["cmd_run", "run_settings"]


def _add_run(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="run one step as a Job and wait for it, streaming its output",
        description="Run the command as a Kubernetes Job and wait until it ends. The phases are "
        "shown on stderr with the elapsed time, the step's output on stdout; the exit status is "
        "the step's. Ctrl-C, SIGTERM and SIGHUP delete the Job before exiting.",
        epilog=_exit_codes_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_step_arguments(p, run_id_default=None)
    p.add_argument(
        "--in-cluster", action="store_true", help="use the pod's ServiceAccount, not a kubeconfig"
    )
    p.add_argument(
        "--pending-timeout",
        type=float,
        metavar="SECONDS",
        help="fail when no node takes the step within this time (default: 600)",
    )
    p.add_argument(
        "--image-pull-timeout",
        type=float,
        metavar="SECONDS",
        help="fail when the image cannot be pulled for this long (default: 300); a pull that "
        "will not get better (no such host, connection refused, manifest unknown) fails within "
        "30 s, or this if shorter",
    )
    p.add_argument(
        "--on-sigterm",
        choices=("delete", "detach"),
        help="on SIGTERM or SIGHUP, delete the Job (default) or leave it running; running the "
        "same step run again (same --run-id and --step-name) reattaches to it",
    )
    p.add_argument("--no-logs", action="store_true", help="do not stream the step's output")
    verbosity = p.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v", "--verbose", action="store_true", help="also show debug lines and API retries"
    )
    verbosity.add_argument(
        "-q", "--quiet", action="store_true", help="no phase lines: only problems and the result"
    )
    p.set_defaults(func=cmd_run)


def run_settings(args: argparse.Namespace, data: dict[str, Any]) -> dict[str, Any]:
    """The settings mapping of ``run``: the file and the step flags, then run's own flags."""
    data = dict(data)
    if args.pending_timeout is not None:
        data["pending_timeout"] = args.pending_timeout
    if args.image_pull_timeout is not None:
        data["image_pull_backoff_timeout"] = args.image_pull_timeout
    if args.on_sigterm is not None:
        data["on_sigterm"] = args.on_sigterm
    if args.no_logs:
        data["stream_logs"] = False
    return data


def _outcome_line(exc: BaseException, *, host: str, args: argparse.Namespace, run_id: str) -> str:
    """The last line ``run`` prints for a step that did not succeed."""
    if isinstance(exc, Terminated):
        name = signal.Signals(exc.signum).name
        if args.on_sigterm == "detach":
            return (
                f"terminated by {name}; the Job was left running (--on-sigterm detach): run the "
                f"same command with --run-id {run_id} to reattach"
            )
        return f"terminated by {name}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(exc, ApiError):
        return f"error: {_describe_api(exc, host)}"
    if isinstance(exc, ConfigurationError):
        return f"error: {_describe_config(exc)}"
    if isinstance(exc, StepFailedError) and exit_code(exc) != EXIT_NOT_RUN:
        return _first_line(str(exc))
    if isinstance(exc, StepError):
        return f"error: {_first_line(str(exc))}"
    return f"error: unexpected {type(exc).__name__}: {_first_line(str(exc))} (-v shows more)"


# Failures the library raises on purpose; anything else is a bug, shown in full with -v.
_EXPECTED = (StepError, ApiError, ConfigurationError)


def cmd_run(args: argparse.Namespace) -> int:
    """Launch the step and wait; the exit status is the step's, or one of ``EXIT_CODES``."""
    from k8s_step_operator._job.settings import KubernetesJobStepOperatorConfig
    from k8s_step_operator._operator import KubernetesJobStepOperator

    info, command, environment, data = _step_from_args(args)
    data = run_settings(args, data)
    # The whole step is checked as render checks it (its settings, image, environment, sizes)
    # before the kubeconfig is read: bad input is one error naming the field, whatever the cluster.
    build_job(info, command, environment, parse_settings(data))
    # Found as kubectl finds it; the library does the same again, but an error here is one line
    # before anything is sent, and it says whether the pod's ServiceAccount is the identity.
    loaded = load_client(args.kubeconfig, args.context, True if args.in_cluster else None)
    host = str(loaded.api_client.configuration.host or "")
    loaded.api_client.close()
    config = KubernetesJobStepOperatorConfig(
        kubeconfig_path=args.kubeconfig,
        kubernetes_context=args.context,
        incluster=loaded.in_cluster,
        **data,
    )
    operator = KubernetesJobStepOperator("cli", config=config)
    console = Console(sys.stderr)
    failure: BaseException | None = None
    with _console_logging(console, verbose=args.verbose, quiet=args.quiet) as view:
        unsubscribe = operator.subscribe(view)
        try:
            with terminations_raise():
                if not args.quiet:
                    console.set_status(f"step {info.pipeline_step_name}: submitting to {host}")
                operator.launch(info, command, environment)
        except (Terminated, KeyboardInterrupt) as exc:
            failure = exc
        except Exception as exc:
            if args.verbose and not isinstance(exc, _EXPECTED):
                logging.getLogger(_OPERATOR_LOGGER).exception("unexpected error")
            failure = exc
        finally:
            # Nothing reaches the console once it is closed (a watch failing as it stops).
            unsubscribe()
            with contextlib.suppress(Exception):
                operator.close()
    if failure is None:
        return 0
    if isinstance(failure, StepError) and failure.log_tail and args.no_logs:
        # Not streamed: the step's last lines have not been seen yet.
        print("--- last lines of the step's log ---", file=sys.stderr)
        print("\n".join(failure.log_tail), file=sys.stderr)
    print(
        f"{PROG} run: {_outcome_line(failure, host=host, args=args, run_id=info.run_id)}",
        file=sys.stderr,
        flush=True,
    )
    return exit_code(failure)
