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

The modules, one job each: ``_command`` (the parser and ``main``), ``_arguments`` (the arguments
that describe a step, and the step they describe), ``_render`` and ``_run`` (one subcommand
each), ``_console`` (the terminal: lines and the status line), ``_logging`` (the runner's
records and events on the console), ``_outcome`` (exit statuses and one-line errors). SIGTERM
and SIGHUP are handled by the runner's one signals module, as in ``launch``.
``python -m k8s_step_operator.cli`` runs ``main`` (``__main__``).
"""

from __future__ import annotations

from k8s_step_operator.cli._command import build_parser, main
from k8s_step_operator.cli._console import Console
from k8s_step_operator.cli._outcome import EXIT_CODES, exit_code
from k8s_step_operator.cli._render import cmd_render
from k8s_step_operator.cli._run import cmd_run

__all__ = [
    "EXIT_CODES",
    "Console",
    "build_parser",
    "cmd_render",
    "cmd_run",
    "exit_code",
    "main",
]
