"""`dad-edge stream --mqtt mqtt://broker:1883/topic`: each event line of `--events`, published to an
MQTT broker (a PLC gateway, Node-RED, a SCADA bridge) with paho-mqtt.

    publisher = MqttPublisher("mqtt://broker.local/line3/inspection")
    publisher.publish(record, run)      # the events file's JSON object, as text; never waits for the broker
    publisher.close()                   # waits up to a few seconds for the broker's acknowledgements

QoS 1 (at least once: a subscriber may see a line twice after a reconnect; `run` + `frame` tell
them apart). paho's own thread does the network (loop_start): a broker that is down or slow never
holds up the stream. While it is away events queue in memory, up to MAX_QUEUED (then the newest
are dropped and counted), and go out once paho has reconnected (connect_async + reconnect_delay_set).

Credentials come from the environment, $DAD_EDGE_MQTT_USERNAME and $DAD_EDGE_MQTT_PASSWORD: a
command line shows up in process lists, shell histories and logs, so a URL with user:password@
is refused. mqtts:// connects with TLS, checking the broker's certificate against the system's CAs.
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict
from urllib.parse import unquote, urlsplit

from dad_edge.errors import ConfigError

log = logging.getLogger("dad_edge.stream.mqtt")

USERNAME_ENV, PASSWORD_ENV = "DAD_EDGE_MQTT_USERNAME", "DAD_EDGE_MQTT_PASSWORD"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
QOS = 1
MAX_QUEUED = 10_000  # events held while the broker is away: minutes of a 30 fps line, a few MB
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 10  # paho doubles the wait between attempts up to the max
KEEPALIVE_S = 30
_FORM = "mqtt://HOST[:PORT]/TOPIC (mqtts:// for TLS)"


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    topic: str
    tls: bool

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}/{self.topic}"


def _redact(url: str) -> str:
    return re.sub(r"//[^/]*@", "//***@", url)


def parse_mqtt_url(url: str) -> MqttTarget:
    """mqtt://HOST[:PORT]/TOPIC -> MqttTarget; ConfigError naming the (redacted) URL when it is not one."""
    shown = _redact(url)
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ConfigError(f"--mqtt {shown}: expected {_FORM}")
    if "@" in parts.netloc:
        raise ConfigError(f"--mqtt {shown}: credentials do not go in the URL (a command line shows up in process "
                          f"lists and logs); set ${USERNAME_ENV} and ${PASSWORD_ENV} in the environment instead")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ConfigError(f"--mqtt {shown}: the port must be a number from 1 to 65535") from None
    topic = unquote(parts.path[1:])
    if not parts.hostname or not topic:
        raise ConfigError(f"--mqtt {shown}: expected {_FORM}, with a host and a topic")
    if "+" in topic or "#" in url or "\0" in topic or "?" in url:  # urlsplit reads # and ? as URL parts
        raise ConfigError(f"--mqtt {shown}: a topic to publish to has no wildcard (+, #), query or fragment")
    return MqttTarget(parts.hostname, port, topic, parts.scheme == "mqtts")


class MqttPublisher:
    """Publishes event records to `url`'s topic from any thread; see the module doc."""

    def __init__(self, url: str, client_id: str = ""):
        self.target = parse_mqtt_url(url)
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise ConfigError("--mqtt needs paho-mqtt 2: pip install 'dad_edge[mqtt]'") from None
        if not hasattr(mqtt, "CallbackAPIVersion"):
            raise ConfigError("--mqtt needs paho-mqtt 2 (this one is older): pip install -U 'paho-mqtt>=2'")
        self._queue_full = mqtt.MQTT_ERR_QUEUE_SIZE
        user, password = os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV)
        if password is not None and not user:
            raise ConfigError(f"${PASSWORD_ENV} is set but ${USERNAME_ENV} is not: set both, or neither")
        self.published = self.acknowledged = self.dropped = 0
        self.connected = threading.Event()
        self._lock = threading.Lock()  # counters: the caller publishes, paho's thread acknowledges
        self._failing = False  # a refused or lost connection was logged; the next one is not
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"dad-edge-{socket.gethostname()}-{os.getpid()}")
        if user:
            self.client.username_pw_set(user, password)
        if self.target.tls:
            self.client.tls_set()
        self.client.max_queued_messages_set(MAX_QUEUED)
        self.client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.connect_async(self.target.host, self.target.port, KEEPALIVE_S)
        self.client.loop_start()  # paho's thread connects, reconnects, sends and receives acknowledgements
        log.info("MQTT: publishing events to %s%s", self.target, f" as ${USERNAME_ENV}" if user else "")

    # paho's thread
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            if not self._failing:
                log.warning("MQTT: %s refused the connection: %s; retrying", self.target, reason_code)
            self._failing = True
            return
        self._failing = False
        self.connected.set()
        log.info("MQTT: connected to %s", self.target)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if was:
            log.warning("MQTT: lost %s (%s); reconnecting in the background, events wait (up to %d)",
                        self.target, reason_code, MAX_QUEUED)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            self.acknowledged += 1

    # the caller's thread
    def publish(self, record: Dict[str, Any], run: str) -> None:
        """One event: the events file's line (`record` plus its `run`) as the payload. Never blocks."""
        info = self.client.publish(self.target.topic, json.dumps({**record, "run": run}), qos=QOS)
        with self._lock:
            if info.rc == self._queue_full:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("MQTT: %d events dropped: %s has been away for %d queued events",
                                self.dropped, self.target, MAX_QUEUED)
            else:
                self.published += 1

    @property
    def unacknowledged(self) -> int:
        with self._lock:
            return self.published - self.acknowledged

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait up to `timeout_s` for the broker to acknowledge what was published, then disconnect."""
        deadline = time.monotonic() + timeout_s
        while self.unacknowledged and time.monotonic() < deadline:  # a broker back within it still gets them
            time.sleep(0.02)
        self.client.disconnect()
        self.client.loop_stop()
        lost = self.unacknowledged
        log.info("MQTT: %d events published to %s, %d acknowledged%s%s", self.published, self.target,
                 self.acknowledged, f", {lost} not acknowledged at exit" if lost else "",
                 f", {self.dropped} dropped (queue full)" if self.dropped else "")
