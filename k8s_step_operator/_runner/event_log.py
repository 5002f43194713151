"""The step's events as log lines: the logging module is one subscriber among others.

Every runner's event bus starts with ``log_event`` subscribed, so a library user who configures
``logging`` sees each phase, heartbeat and Kueue decision, and the step's own output on the
``k8s_step_operator.step`` logger. The lines are written from the events' fields; nothing reads
them back: the command line's status line and ZenML's run metadata subscribe to the events.
"""

from __future__ import annotations

import logging

from k8s_step_operator._format import duration
from k8s_step_operator._runner.diagnosis import Phase
from k8s_step_operator._runner.events import (
    Admitted,
    Event,
    Finished,
    Heartbeat,
    LogLine,
    PhaseChanged,
    Preempted,
    RanksPlaced,
    Submitted,
)

__all__ = ["STEP_LOGGER", "log_event"]

log = logging.getLogger("k8s_step_operator")
STEP_LOGGER = logging.getLogger("k8s_step_operator.step")


def log_event(event: Event) -> None:
    """Write one event as a log line (events that are not a step's progress are skipped)."""
    if isinstance(event, LogLine):
        STEP_LOGGER.info("%s%s", event.prefix, event.text)
    elif isinstance(event, Submitted):
        if event.reattached:
            log.info("step %s: reattached to existing Job %s", event.step, event.where)
        else:
            log.info("step %s: submitted Job %s", event.step, event.where)
    elif isinstance(event, PhaseChanged):
        if event.phase is Phase.SUCCEEDED:
            return  # success has its own line, once the logs are drained
        log.log(
            logging.WARNING if event.problem is not None else logging.INFO,
            "step %s: %s - %s",
            event.step,
            event.phase.value,
            event.summary,
            extra={"k8sso_phase": event.phase.value},
        )
    elif isinstance(event, Heartbeat):
        against = f"; {event.bound_name} {event.bound:.0f}s" if event.bound is not None else ""
        log.info(
            "step %s: still %s after %s%s - %s",
            event.step,
            event.phase.value,
            duration(event.elapsed),
            against,
            event.summary,
            extra={"k8sso_phase": event.phase.value, "k8sso_elapsed": event.elapsed},
        )
    elif isinstance(event, Admitted):
        flavors = ", ".join(f"{r}={f}" for r, f in sorted(event.flavors.items()))
        log.info(
            "step %s: admitted by Kueue to ClusterQueue %s%s",
            event.step,
            event.cluster_queue,
            f" with flavor {flavors}" if flavors else "",
        )
    elif isinstance(event, Preempted):
        log.warning(
            "step %s: preempted by Kueue (%s: %s); queued again, it will run again from the start",
            event.step,
            event.reason,
            event.message,
        )
    elif isinstance(event, RanksPlaced):
        log.info("step %s: %s", event.step, event.text)
    elif isinstance(event, Finished) and event.succeeded:
        log.info("step %s: succeeded (Job %s)", event.step, event.where)
