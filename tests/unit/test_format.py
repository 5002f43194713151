"""One format for a length of time, on the status line and in the runner's heartbeats."""

from __future__ import annotations

import pytest

from k8s_step_operator._format import duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.99, "0s"),
        (59.9, "59s"),
        (60, "1m00s"),
        (65, "1m05s"),
        (3599, "59m59s"),
        (3600, "1h00m00s"),
        (3723, "1h02m03s"),
        (26 * 3600 + 5, "26h00m05s"),
    ],
)
def test_whole_seconds_with_minutes_and_hours(seconds: float, text: str) -> None:
    assert duration(seconds) == text
