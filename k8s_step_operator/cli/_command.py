"""The ``k8s-step-operator`` command: its parser with every subcommand, and ``main``."""

from __future__ import annotations

import argparse
import difflib
import signal
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from k8s_step_operator._doctor import command as doctor_command
from k8s_step_operator._errors import ApiError, ConfigurationError, configuration_error
from k8s_step_operator.cli._arguments import _Parser
from k8s_step_operator.cli._outcome import (
    EXIT_NOT_RUN,
    EXIT_USAGE,
    PROG,
    _describe_api,
    _describe_config,
    _error_line,
)
from k8s_step_operator.cli._render import _add_render
from k8s_step_operator.cli._run import _add_run

__all__ = ["build_parser", "main"]

Command = Callable[[argparse.Namespace], int]


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


def _unrecognized(
    parser: argparse.ArgumentParser, args: argparse.Namespace, extras: Sequence[str]
) -> str:
    """``unrecognized arguments``, with the closest option of the subcommand for each flag."""
    options: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub = action.choices.get(getattr(args, "subcommand", None) or "")
            for sub_action in (sub or parser)._actions:
                options.extend(o for o in sub_action.option_strings if o.startswith("--"))
    hints = []
    for extra in extras:
        if extra.startswith("--") and extra != "--":
            flag = extra.split("=", 1)[0]
            close = difflib.get_close_matches(flag, options, n=1, cutoff=0.6)
            if close:
                hints.append(f"{flag}: did you mean {close[0]}?")
    text = f"unrecognized arguments: {' '.join(extras)}"
    return text + (f" ({'; '.join(hints)})" if hints else " (--help lists the options)")


# What an API failure exits with, per subcommand (run decides for itself, see ``exit_code``).
_API_ERROR_EXIT = {"doctor": 1}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if extras:
        _error_line(getattr(args, "subcommand", None) or "", _unrecognized(parser, args, extras))
        return EXIT_USAGE
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
