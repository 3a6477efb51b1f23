"""The import path the README documents (`from dad_edge.alarms import Alarm`); the code lives in
dad_edge/stream/alarms.py."""
from dad_edge.stream.alarms import Alarm  # noqa: F401
