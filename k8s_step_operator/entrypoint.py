"""The program a step's container runs: ``python -m k8s_step_operator.entrypoint``.

``--entrypoint_config_source <class path>`` names a ``BaseEntrypointConfiguration`` subclass;
the remaining arguments are its options. The step's own output goes to stdout unchanged; this
module logs to stderr. Exit codes: 0 when the step returned, 1 when it raised (traceback on
stderr), the step's own code when it called ``sys.exit``, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence

from k8s_step_operator._errors import ConfigurationError
from k8s_step_operator._step_operator_api.entrypoint_configuration import (
    ENTRYPOINT_CONFIG_SOURCE_OPTION,
    BaseEntrypointConfiguration,
)
from k8s_step_operator._step_operator_api.sources import load_source

__all__ = ["main"]

logger = logging.getLogger("k8s_step_operator.entrypoint")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the entrypoint configuration named in ``argv``; return the process exit code."""
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    parser = argparse.ArgumentParser(prog="python -m k8s_step_operator.entrypoint")
    parser.add_argument(f"--{ENTRYPOINT_CONFIG_SOURCE_OPTION}", required=True)
    args, remaining = parser.parse_known_args(argv)
    try:
        config_class = load_source(
            getattr(args, ENTRYPOINT_CONFIG_SOURCE_OPTION),
            field=f"--{ENTRYPOINT_CONFIG_SOURCE_OPTION}",
        )
        if not (
            isinstance(config_class, type) and issubclass(config_class, BaseEntrypointConfiguration)
        ):
            raise ConfigurationError(
                f"--{ENTRYPOINT_CONFIG_SOURCE_OPTION}",
                "a subclass of BaseEntrypointConfiguration",
                getattr(args, ENTRYPOINT_CONFIG_SOURCE_OPTION),
            )
        entrypoint_config = config_class(arguments=list(remaining))
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        entrypoint_config.run()
    except Exception as exc:
        # The step's output first, then its traceback: the log reads in order.
        sys.stdout.flush()
        traceback.print_exc()
        # A step that cannot be loaded is a bad argument (2); a step that raised failed (1).
        return 2 if isinstance(exc, ConfigurationError) else 1
    finally:
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
