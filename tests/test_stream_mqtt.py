"""`dad-edge stream --mqtt`: every event line reaches a real broker (mosquitto, started here on a free
loopback port), the stream goes on through a broker restart, credentials come from the environment."""
import contextlib
import getpass
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dad_edge.cli import main
from dad_edge.errors import ConfigError
from dad_edge.stream.mqtt import MqttTarget, parse_mqtt_url
from stream_support import calibrated_onnx, write_video

mqtt = pytest.importorskip("paho.mqtt.client")
MOSQUITTO = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if Path(p).is_file()), None)
needs_broker = pytest.mark.skipif(MOSQUITTO is None, reason="the mosquitto broker is not installed "
                                  "(Debian: apt-get install mosquitto; .ci/run installs it where apt works)")
TOPIC = "line3/inspection"
N_FRAMES, DEFECTIVE = 40, {3, 11, 12, 30}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto on 127.0.0.1:`port`, persistent (a restart keeps the subscriptions and queued messages)."""

    def __init__(self, folder: Path, password_file: Path = None):
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = folder / "mosquitto.conf"
        # `user`: run as whoever runs the tests (as root mosquitto would switch to "mosquitto", who cannot
        # read pytest's private temporary folders).
        lines = [f"listener {self.port} 127.0.0.1", f"user {getpass.getuser()}", "persistence true",
                 f"persistence_location {folder}/"]
        lines += [f"password_file {password_file}", "allow_anonymous false"] if password_file else \
            ["allow_anonymous true"]
        self.config.write_text("\n".join(lines) + "\n")
        self.proc = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            assert self.proc.poll() is None, self.proc.stderr.read().decode()
            assert time.monotonic() < deadline, "mosquitto did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()  # mosquitto saves its persistent state on SIGTERM
        self.proc.wait(timeout=10)


class Subscriber:
    """A persistent QoS 1 subscription (clean_session=False): what was queued for it survives a restart."""

    def __init__(self, port: int, username=None, password=None):
        self.payloads, self.subscribed = [], threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{port}",
                                  clean_session=False)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(TOPIC, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = lambda c, u, msg: self.payloads.append(msg.payload.decode())
        self.client.reconnect_delay_set(0.2, 0.5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def wait_for(self, condition, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while not condition(self.payloads) and time.monotonic() < deadline:
            time.sleep(0.05)
        return condition(self.payloads)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream_mqtt")
    video = write_video(tmp / "line.mp4", N_FRAMES, DEFECTIVE)
    return video, calibrated_onnx(tmp, video, DEFECTIVE)


def frame_of(line: str) -> int:
    return int(line.split('"frame": ', 1)[1].split(",", 1)[0])


def test_urls():
    assert parse_mqtt_url("mqtt://broker.local/line3/events") == MqttTarget("broker.local", 1883, "line3/events", False)
    assert parse_mqtt_url("mqtts://10.0.0.5:8884/a%20b") == MqttTarget("10.0.0.5", 8884, "a b", True)
    for bad, says in [("http://broker/t", "expected mqtt://HOST"), ("mqtt://broker", "with a host and a topic"),
                      ("mqtt://broker/line/#", "no wildcard"), ("mqtt://broker:99999/t", "port must be a number")]:
        with pytest.raises(ConfigError, match=says):
            parse_mqtt_url(bad)


def test_credentials_in_the_url_are_refused_without_echoing_them(model, capsys):
    video, onnx = model
    assert main(["stream", str(onnx), "--source", str(video), "--no-display",
                 "--mqtt", "mqtt://plc:hunter2@127.0.0.1:1/t"]) == 2
    captured = capsys.readouterr()
    assert "hunter2" not in captured.err + captured.out
    assert "$DAD_EDGE_MQTT_USERNAME and $DAD_EDGE_MQTT_PASSWORD" in captured.err.strip().splitlines()[-1]


@needs_broker
def test_every_event_arrives_through_a_broker_restart(model, tmp_path):
    _, onnx = model
    video = write_video(tmp_path / "long.mp4", 3000, defective=range(5, 3000, 20))
    broker = Broker(tmp_path / "broker")
    sub = Subscriber(broker.port)
    events = tmp_path / "events.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "dad_edge", "stream", str(onnx), "--source", str(video),
                             "--no-display", "--events", str(events), "--mqtt",
                             f"mqtt://127.0.0.1:{broker.port}/{TOPIC}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert sub.wait_for(lambda p: len(p) >= 20, timeout=60), "no events reached the broker"
        broker.stop()
        stopped_at = max(frame_of(p) for p in sub.payloads)
        time.sleep(1.5)  # the stream goes on meanwhile; its events wait in paho's queue
        broker.start()
        assert proc.poll() is None, "the stream ended during the outage: make the video longer"
        assert sub.wait_for(lambda p: max(map(frame_of, p)) > stopped_at + 50), "no events after the restart"
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    try:
        assert proc.returncode == 0, output
        lines = events.read_text().splitlines()
        assert [frame_of(line) for line in lines] == list(range(len(lines)))  # the stream lost no frame
        assert len(lines) > stopped_at + 50
        # QoS 1 is at least once: a line may come twice after the reconnect, never changed, none missing.
        assert sub.wait_for(lambda p: set(p) >= set(lines), timeout=20), \
            f"{len(set(lines) - set(sub.payloads))} of {len(lines)} events never arrived"
        assert set(sub.payloads) == set(lines)
        assert "MQTT: lost" in output and output.count("MQTT: connected") >= 2
    finally:
        sub.close()
        broker.stop()


@needs_broker
def test_credentials_from_the_environment(model, tmp_path, monkeypatch, caplog):
    video, onnx = model
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "plc", "s3cret-pw"], check=True,
                   capture_output=True)
    passwords.chmod(0o600)
    broker = Broker(tmp_path / "broker", password_file=passwords)
    sub = Subscriber(broker.port, "plc", "s3cret-pw")
    url = f"mqtt://127.0.0.1:{broker.port}/{TOPIC}"
    try:
        # A wrong password: the broker refuses, the stream says so and runs to its end all the same.
        monkeypatch.setenv("DAD_EDGE_MQTT_USERNAME", "plc")
        monkeypatch.setenv("DAD_EDGE_MQTT_PASSWORD", "wrong")
        assert main(["stream", str(onnx), "--source", str(video), "--no-display", "--mqtt", url]) == 0
        assert "refused the connection: Not authorized" in caplog.text
        assert sub.payloads == []
        caplog.clear()
        monkeypatch.setenv("DAD_EDGE_MQTT_PASSWORD", "s3cret-pw")
        events = tmp_path / "events.jsonl"
        assert main(["stream", str(onnx), "--source", str(video), "--no-display", "--events", str(events),
                     "--only-anomalies", "--mqtt", url]) == 0
        lines = events.read_text().splitlines()
        assert len(lines) == len(DEFECTIVE)
        assert sub.wait_for(lambda p: len(p) >= len(lines), timeout=10)
        assert sorted(sub.payloads) == sorted(lines)
        assert "s3cret-pw" not in caplog.text and "wrong" not in caplog.text
    finally:
        sub.close()
        broker.stop()
