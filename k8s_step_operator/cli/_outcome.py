"""How a command ends: its exit status (``EXIT_CODES``) and its one-line error on stderr."""

from __future__ import annotations

import re
import signal
import sys
import textwrap

from pydantic import ValidationError

from k8s_step_operator._errors import (
    ApiError,
    ConfigurationError,
    DeadlineExceededError,
    ForbiddenError,
    NotFoundError,
    OOMKilledError,
    ServerUnavailableError,
    StepCancelledError,
    StepFailedError,
)
from k8s_step_operator._runner.signals import Terminated

__all__ = [
    "EXIT_CODES",
    "EXIT_NOT_RUN",
    "EXIT_OOM",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "PROG",
    "exit_code",
]

PROG = "k8s-step-operator"

# The step's own code passes through. The command's own codes follow `timeout` (124: a time limit
# ran out) and `docker run` (125: the container could not be run); 128 + N stays for signal N, as
# shells report it. Usage errors keep argparse's 2.
EXIT_USAGE = 2
EXIT_TIMEOUT = 124
EXIT_NOT_RUN = 125
EXIT_OOM = 137

EXIT_CODES: tuple[tuple[str, str], ...] = (
    ("0", "the step succeeded"),
    ("1-255", "the step's own exit code, as its container exited (`StepFailedError`)"),
    ("137", "the step was OOM-killed (`OOMKilledError`)"),
    (
        "2",
        "bad input: a flag, a setting, the kubeconfig or its context (`ConfigurationError`); "
        "nothing was sent",
    ),
    (
        "124",
        "a time limit ran out: `active_deadline_seconds` or `queue_timeout` "
        "(`DeadlineExceededError`)",
    ),
    (
        "125",
        "the step could not be run, or ended without an exit code: the API server unreachable "
        "or refusing (`ApiError`), no node can take it, also after `pending_timeout` "
        "(`UnschedulableError`), its image (`ImageError`), a missing Secret or ConfigMap "
        "(`ContainerConfigError`), admission (`AdmissionRejectedError`), a queue that cannot "
        "admit it (`QueueError`), its Job deleted by someone else (`DeletedExternallyError`)",
    ),
    (
        "129, 130, 143",
        "SIGHUP, Ctrl-C (SIGINT), SIGTERM: the Job was deleted first (on SIGHUP and SIGTERM, "
        "left running with `--on-sigterm detach`)",
    ),
)
_EXIT_CODES_NOTE = (
    "A step that itself exits 2, 124, 125, 129, 130 or 143 shows the same status: the last line "
    "on stderr tells them apart."
)


def exit_code(exc: BaseException) -> int:
    """The exit status of ``run`` when launching the step raised ``exc`` (see ``EXIT_CODES``)."""
    if isinstance(exc, Terminated):
        return 128 + exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return 128 + signal.SIGINT
    if isinstance(exc, ConfigurationError | ValidationError):
        return EXIT_USAGE
    if isinstance(exc, OOMKilledError):
        return EXIT_OOM
    if isinstance(exc, StepFailedError) and exc.exit_code is not None and 0 < exc.exit_code < 256:
        return exc.exit_code
    if isinstance(exc, DeadlineExceededError):
        return EXIT_TIMEOUT
    if isinstance(exc, StepCancelledError):
        # Raised only when a termination signal's own handler returned: the CLI's never does.
        return 128 + signal.SIGTERM
    return EXIT_NOT_RUN


def _exit_codes_epilog() -> str:
    width = max(len(code) for code, _ in EXIT_CODES)
    lines = ["exit status:"]
    for code, meaning in EXIT_CODES:
        wrapped = textwrap.wrap(meaning.replace("`", ""), 96 - width - 4)
        lines.append(f"  {code.ljust(width)}  {wrapped[0]}")
        lines.extend(f"  {' ' * width}  {more}" for more in wrapped[1:])
    lines.extend(["", *textwrap.wrap(_EXIT_CODES_NOTE, 96)])
    return "\n".join(lines)


# What to do about a configuration error, by the field it names.
_HINTS = {
    "kubeconfig_path": "set --kubeconfig or KUBECONFIG",
    "kubernetes_context": "set --context to one of them",
    "incluster": "run it in a pod, or set --kubeconfig",
    "namespace": "set -n/--namespace",
}
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


def _describe_config(exc: ConfigurationError) -> str:
    hint = _HINTS.get(exc.field)
    return f"{exc} ({hint})" if hint else str(exc)


def _describe_api(exc: ApiError, host: str = "") -> str:
    """One line for an API failure, with what to do about it."""
    where = f" {host}" if host else ""
    if isinstance(exc, ServerUnavailableError) and exc.status == 0:
        found = _ERRNO.search(exc.message)
        cause = found.group(1).strip() if found else _first_line(exc.message)[:200]
        return (
            f"cannot reach the API server{where}: {cause} ({exc.operation}); check that the "
            "cluster is up and that --kubeconfig / --context point to it"
        )
    text = _first_line(str(exc))
    if isinstance(exc, ForbiddenError):
        return f"{text} (`{PROG} doctor` names the missing permission)"
    if isinstance(exc, NotFoundError) and "namespaces" in exc.message:
        found = re.search(r'namespaces "([^"]+)" not found', exc.message)
        create = f"kubectl create namespace {found.group(1)}" if found else "create it"
        return f"{text} (the namespace does not exist: {create}, or pick another with -n)"
    return text


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def _error_line(subcommand: str, message: str) -> None:
    where = f"{PROG} {subcommand}" if subcommand else PROG
    print(f"{where}: error: {message}", file=sys.stderr, flush=True)
