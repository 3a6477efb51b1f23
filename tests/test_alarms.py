"""Alarms: callback or command, at most one per interval, never blocking the caller."""
import json
import threading
import time

import pytest

from dad_edge.stream.alarms import Alarm
from dad_edge.errors import ConfigError
from dad_edge.runtime.result import Result


def anomalous(score=0.9):
    return Result("camera 0", score=score, label=True)


def test_callback_at_most_once_per_interval():
    seen = []
    alarm = Alarm(callback=seen.append, min_interval_s=0.3)
    first, second = anomalous(0.8), anomalous(0.9)
    assert alarm(first) is True
    alarm.wait(2)
    assert alarm(second) is False  # inside the interval
    time.sleep(0.35)
    assert alarm(second) is True
    alarm.close()
    assert seen == [first, second] and (alarm.fired, alarm.suppressed, alarm.failed) == (2, 1, 0)


def test_a_slow_alarm_never_blocks_and_later_ones_are_suppressed_meanwhile():
    release = threading.Event()
    alarm = Alarm(callback=lambda r: release.wait(5), min_interval_s=0)
    t0 = time.perf_counter()
    assert alarm(anomalous()) is True
    assert alarm(anomalous()) is False  # the first one still runs
    assert time.perf_counter() - t0 < 0.1
    release.set()
    assert alarm.wait(2)
    assert alarm(anomalous()) is True
    alarm.close()
    assert (alarm.fired, alarm.suppressed) == (2, 1)


def test_command_gets_the_event_in_its_environment(tmp_path):
    out = tmp_path / "alarm.txt"
    script = f'echo "$DAD_EDGE_FRAME $DAD_EDGE_SCORE" >> {out}; echo "$DAD_EDGE_EVENT" >> {out}'
    alarm = Alarm(command=f"sh -c '{script}'", min_interval_s=0)
    record = {"frame": 17, "score": 0.75, "label": True, "source": "line.mp4", "boxes": [[1, 2, 3, 4]]}
    alarm(anomalous(0.75), record)
    alarm.close()
    first, second = out.read_text().splitlines()
    assert first == "17 0.75" and json.loads(second) == record and alarm.failed == 0


def test_failures_are_counted_not_raised(tmp_path):
    alarm = Alarm(command="sh -c 'echo broken >&2; exit 3'", min_interval_s=0)
    alarm(anomalous())
    alarm.wait(5)
    assert alarm.failed == 1

    def boom(_):
        raise RuntimeError("siren offline")

    alarm = Alarm(callback=boom, min_interval_s=0)
    alarm(anomalous())
    alarm.close()
    assert alarm.failed == 1 and alarm.fired == 1


def test_command_that_runs_too_long_is_killed():
    alarm = Alarm(command="sleep 5", min_interval_s=0, timeout_s=0.2)
    t0 = time.perf_counter()
    alarm(anomalous())
    assert alarm.wait(3) and time.perf_counter() - t0 < 2
    assert alarm.failed == 1
    alarm.close()


def test_bad_configurations():
    with pytest.raises(ConfigError, match="exactly one"):
        Alarm()
    with pytest.raises(ConfigError, match="exactly one"):
        Alarm(callback=print, command="true")
    with pytest.raises(ConfigError, match="not found"):
        Alarm(command="no-such-alarm-program --loud")
    with pytest.raises(ConfigError, match="empty"):
        Alarm(command="  ")
    with pytest.raises(ConfigError, match="quotation"):
        Alarm(command="sh -c 'unclosed")
    with pytest.raises(ConfigError, match=">= 0"):
        Alarm(callback=print, min_interval_s=-1)
