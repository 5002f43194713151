r"""The ``k8s-step-operator`` command.

One function per subcommand (``cmd_<name>``) and one that declares its arguments
(``_add_<name>``); ``main`` wires them up. The conventions are kubectl's: ``-n/--namespace``
(default: the kubeconfig context's namespace, or the pod's), ``--kubeconfig``, ``--context``,
``-o yaml|json``, ``--version``. Every error is one line on stderr saying what to do, and
bad input exits 2 before anything is sent.

``run`` launches a step synchronously, shows its phases with the elapsed time on stderr (on a
terminal, also one status line rewritten in place), its output on stdout, and exits with the
step's exit code, or with a code of its own that says why the step did not run to one
(``EXIT_CODES``)::

    k8s-step-operator run --gpus 2 --gpu-type NVIDIA-H100-80GB-HBM3 --image IMAGE -- python train.py

``render`` prints the Job that a set of settings produces, without contacting any cluster::

    k8s-step-operator render --settings step.yaml --gpus 2 --gpu-type NVIDIA-H100-80GB-HBM3 \\
        --image registry.example/train:1 -- python -m train

``doctor`` checks what the pipeline's identity may do in a namespace (``_doctor``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

import yaml
from pydantic import ValidationError

from k8s_step_operator._doctor import command as doctor_command
from k8s_step_operator._errors import (
    ApiError,
    ConfigurationError,
    DeadlineExceededError,
    ForbiddenError,
    NotFoundError,
    OOMKilledError,
    ServerUnavailableError,
    StepCancelledError,
    StepError,
    StepFailedError,
    configuration_error,
)
from k8s_step_operator._job.builder import build_job
from k8s_step_operator._job.settings import parse_settings
from k8s_step_operator._kube.client import load_client
from k8s_step_operator._step_operator_api.resource_settings import ResourceSettings
from k8s_step_operator._step_operator_api.step_run_info import (
    PipelineConfiguration,
    StepConfiguration,
    StepRunInfo,
)

__all__ = [
    "EXIT_CODES",
    "Console",
    "build_parser",
    "cmd_render",
    "cmd_run",
    "exit_code",
    "main",
]

PROG = "k8s-step-operator"

Command = Callable[[argparse.Namespace], int]

# -- exit status ---------------------------------------------------------------------------------
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
    if isinstance(exc, _Terminated):
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


# -- one-line errors -----------------------------------------------------------------------------

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
        return f"{text} (check -n/--namespace)"
    return text


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def _error_line(subcommand: str, message: str) -> None:
    print(f"{PROG} {subcommand}: error: {message}", file=sys.stderr, flush=True)


# -- arguments -----------------------------------------------------------------------------------


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
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument("command", nargs="*", help="the step's command, after --")


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


def run_settings(args: argparse.Namespace, data: dict[str, Any]) -> dict[str, Any]:
    """The settings mapping of ``run``: the file and the step flags, then run's own flags."""
    data = dict(data)
    if args.pending_timeout is not None:
        data["pending_timeout"] = args.pending_timeout
    if args.on_sigterm is not None:
        data["on_sigterm"] = args.on_sigterm
    if args.no_logs:
        data["stream_logs"] = False
    return data


# -- render --------------------------------------------------------------------------------------


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


# -- run: what the user sees -----------------------------------------------------------------------

_CLEAR = "\r\x1b[K"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Console:
    """stderr for a person: lines with the elapsed time and, on a terminal, a live status line.

    On a terminal, one status line (the current phase and how long it has lasted) is rewritten
    in place every second; lines of the operator and of the step are written above it. When
    stderr is not a terminal, no control character is ever written and the status line is not
    shown: only whole lines.

    Args:
        stream: Where the lines go (stderr).
        tty: Whether ``stream`` is a terminal; ``None`` asks it.
        clock: Monotonic seconds.
        width: Columns of the terminal; ``None`` asks it (the status line is cut to fit, since a
            wrapped line cannot be rewritten in place).
    """

    # Connection trouble is said as a line only when it lasts, and then once a minute.
    TROUBLE_SHOWN_AFTER = 15.0
    TROUBLE_REPEAT = 60.0
    TROUBLE_GAP = 10.0

    def __init__(
        self,
        stream: IO[str],
        *,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.clock = clock
        self.width = width
        self.start = clock()
        self.status = ""
        self.detail = ""
        self.status_since = self.start
        self._shown = False
        self._lock = threading.RLock()
        self._trouble_since: float | None = None
        self._trouble_last = 0.0
        self._trouble_said: float | None = None
        self._trouble = ""

    def _prefix(self) -> str:
        return f"[{self.clock() - self.start:7.1f}s]"

    def _columns(self) -> int:
        if self.width:
            return self.width
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = 0
        # A terminal that does not know its size says 0 (a pseudo-terminal nobody sized).
        return columns if columns > 0 else shutil.get_terminal_size((100, 24)).columns

    def _erase(self) -> None:
        if self._shown:
            self.stream.write(_CLEAR)
            self._shown = False

    def _draw(self) -> None:
        if not self.tty or not self.status:
            return
        now = self.clock()
        text = f"{self._prefix()} {self.status} ({_duration(now - self.status_since)})"
        if self.detail:
            text += f" - {self.detail}"
        if self._trouble and self._trouble_since is not None:
            text += f"; API server not answering: {self._trouble}"
        self.stream.write(_CLEAR + text[: max(self._columns() - 1, 10)])
        self.stream.flush()
        self._shown = True

    def line(self, text: str) -> None:
        """A line with the elapsed time, above the status line."""
        with self._lock:
            self._erase()
            self.stream.write(f"{self._prefix()} {text}\n")
            self._draw()
            self.stream.flush()

    def around(self, write: Callable[[], None]) -> None:
        """Run ``write`` (a line on stdout) with the status line out of its way."""
        with self._lock:
            if self._shown:
                self._erase()
                self.stream.flush()
            write()
            self._draw()

    def set_status(self, text: str, detail: str = "", *, lasted: float = 0.0) -> None:
        """Show ``text (how long) - detail`` as the status, having lasted ``lasted`` already."""
        with self._lock:
            self.status = _first_line(text)
            self.detail = _first_line(detail)
            self.status_since = self.clock() - lasted
            self._trouble = ""
            self._trouble_since = None
            self._draw()

    def tick(self) -> None:
        """Redraw the status line (its time has moved on)."""
        with self._lock:
            self._draw()

    def trouble(self, text: str) -> None:
        """The API server did not answer and the call is retried: said once it lasts."""
        with self._lock:
            now = self.clock()
            if self._trouble_since is None or now - self._trouble_last > self.TROUBLE_GAP:
                self._trouble_since, self._trouble_said = now, None
            self._trouble_last = now
            self._trouble = text
            lasted = now - self._trouble_since
            due = self._trouble_said is None or now - self._trouble_said >= self.TROUBLE_REPEAT
            if lasted >= self.TROUBLE_SHOWN_AFTER and due:
                self._trouble_said = now
                self.line(f"API server not answering for {_duration(lasted)}, retrying: {text}")
            else:
                self._draw()

    def close(self) -> None:
        """Remove the status line; what follows starts on a clean line."""
        with self._lock:
            self._erase()
            self.stream.flush()


# Log records that say a call is being retried: collapsed unless --verbose.
_RETRY_RECORDS = (
    ("k8s_step_operator._kube.client", "retrying after"),
    ("k8s_step_operator._runner.watcher", "watch of %s in %s failed"),
)
# The runner's phase line and heartbeat (k8s_step_operator._runner.step_run): the status line
# takes the step, its phase and the summary from their arguments.
_PHASE_FORMAT = "step %s: %s - %s"
_HEARTBEAT_FORMAT = "step %s: still %s after %s%s - %s"
_OPERATOR_LOGGER = "k8s_step_operator"
_STEP_LOGGER = "k8s_step_operator.step"


def _is_retry(record: logging.LogRecord) -> bool:
    msg = str(record.msg)
    return any(record.name == name and msg.startswith(head) for name, head in _RETRY_RECORDS)


class _OperatorLines(logging.Handler):
    """The operator's records on the console: phase lines, heartbeats, problems, the status."""

    def __init__(self, console: Console, *, verbose: bool, quiet: bool) -> None:
        super().__init__(logging.DEBUG if verbose else logging.INFO)
        self.console = console
        self.verbose = verbose
        self.quiet = quiet

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if _is_retry(record) and not self.verbose:
                if not self.quiet:
                    self.console.trouble(message)
                return
            self._follow_phase(record, message)
            # Below warnings: nothing with --quiet; the runner's modules' lines (re-lists, log
            # streams) only with --verbose.
            below = record.levelno < logging.WARNING
            if below and (self.quiet or (record.name != _OPERATOR_LOGGER and not self.verbose)):
                return
            if self.verbose and record.exc_info:
                message += "\n" + self.format(record).split("\n", 1)[-1]
            self.console.line(message)
        except Exception:
            self.handleError(record)

    def _follow_phase(self, record: logging.LogRecord, message: str) -> None:
        """Keep the status line on the step's current phase."""
        if self.quiet:
            return
        args = record.args if isinstance(record.args, tuple) else ()
        lasted = getattr(record, "k8sso_elapsed", None)
        if record.msg == _PHASE_FORMAT and len(args) == 3:
            step, phase, summary = args
            self.console.set_status(f"step {step}: {phase}", str(summary), lasted=lasted or 0.0)
        elif record.msg == _HEARTBEAT_FORMAT and len(args) == 5:
            step, phase, _, _, summary = args
            self.console.set_status(f"step {step}: {phase}", str(summary), lasted=lasted or 0.0)
        elif record.name == _OPERATOR_LOGGER and str(record.msg).startswith("step %s: submitted"):
            self.console.set_status(message)


class _StepLines(logging.Handler):
    """Writes the step's own output to stdout, as it prints it."""

    def __init__(self, console: Console, stream: IO[str]) -> None:
        super().__init__(logging.DEBUG)
        self.console = console
        self.out = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()

            def write() -> None:
                self.out.write(message + "\n")
                self.out.flush()

            self.console.around(write)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _console_logging(console: Console, *, verbose: bool, quiet: bool) -> Iterator[None]:
    """Route the operator's loggers to the console for the block, then restore them."""
    operator_log = logging.getLogger(_OPERATOR_LOGGER)
    step_log = logging.getLogger(_STEP_LOGGER)
    saved = (operator_log.level, step_log.level, step_log.propagate)
    lines = _OperatorLines(console, verbose=verbose, quiet=quiet)
    lines.setFormatter(logging.Formatter("%(message)s"))
    output = _StepLines(console, sys.stdout)
    operator_log.setLevel(logging.DEBUG if verbose else logging.INFO)
    operator_log.addHandler(lines)
    step_log.setLevel(logging.INFO)
    step_log.addHandler(output)
    step_log.propagate = False
    ticker_stop = threading.Event()
    ticker: threading.Thread | None = None
    if console.tty and not quiet:

        def tick() -> None:
            while not ticker_stop.wait(1.0):
                console.tick()

        ticker = threading.Thread(target=tick, name="status-line", daemon=True)
        ticker.start()
    try:
        yield
    finally:
        ticker_stop.set()
        if ticker is not None:
            ticker.join(2.0)
        console.close()
        operator_log.removeHandler(lines)
        step_log.removeHandler(output)
        operator_log.setLevel(saved[0])
        step_log.setLevel(saved[1])
        step_log.propagate = saved[2]


# -- run: signals --------------------------------------------------------------------------------


class _Terminated(BaseException):
    """SIGTERM or SIGHUP reached the command: it exits 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_TERMINATING = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _terminations_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``_Terminated`` in the main thread, as Ctrl-C raises its own.

    While a step is followed, the runner's own handlers take over (they delete the Job, or leave
    it with ``on_sigterm: detach``) and then deliver the signal again, to these.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise _Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in _TERMINATING}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# -- run -----------------------------------------------------------------------------------------


def _outcome_line(exc: BaseException, *, host: str, args: argparse.Namespace, run_id: str) -> str:
    """The last line ``run`` prints for a step that did not succeed."""
    if isinstance(exc, _Terminated):
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
    parse_settings(data)  # a clear error naming the field before anything else
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
    with _console_logging(console, verbose=args.verbose, quiet=args.quiet):
        try:
            with _terminations_raise():
                if not args.quiet:
                    console.set_status(f"step {info.pipeline_step_name}: submitting to {host}")
                operator.launch(info, command, environment)
        except (_Terminated, KeyboardInterrupt) as exc:
            failure = exc
        except Exception as exc:
            if args.verbose and not isinstance(exc, _EXPECTED):
                logging.getLogger(_OPERATOR_LOGGER).exception("unexpected error")
            failure = exc
        finally:
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


# -- the command ---------------------------------------------------------------------------------


def _version() -> str:
    from k8s_step_operator import __version__

    return f"{PROG} {__version__}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = _Parser(
        prog=PROG,
        description="Run machine-learning pipeline steps as Kubernetes Jobs on GPU nodes.",
    )
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="subcommand", metavar="COMMAND", parser_class=_Parser)
    _add_run(subparsers)
    _add_render(subparsers)
    doctor_command.add_parser(subparsers)
    return parser


# What an API failure exits with, per subcommand (run decides for itself, see ``exit_code``).
_API_ERROR_EXIT = {"doctor": 1}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    func: Command | None = getattr(args, "func", None)
    if func is None:
        parser.print_usage(sys.stderr)
        return EXIT_USAGE
    try:
        return func(args)
    except ConfigurationError as exc:
        _error_line(args.subcommand, _describe_config(exc))
        return EXIT_USAGE
    except ValidationError as exc:
        error = configuration_error(exc, "settings", secret_fields=("secret_env",))
        _error_line(args.subcommand, _describe_config(error))
        return EXIT_USAGE
    except ApiError as exc:
        _error_line(args.subcommand, _describe_api(exc))
        return _API_ERROR_EXIT.get(args.subcommand, EXIT_NOT_RUN)
    except KeyboardInterrupt:
        _error_line(args.subcommand, "interrupted (Ctrl-C)")
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
