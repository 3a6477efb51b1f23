"""`dad-edge stream`: a model on a camera, network stream, video file or image folder.

    dad-edge stream engine.plan --source 0                 # USB camera
    dad-edge stream engine.plan --source csi://0           # Jetson CSI camera (system OpenCV with GStreamer)
    dad-edge stream model.onnx --source rtsp://host/cam --save-anomalies out/ --events events.jsonl
    dad-edge stream model.onnx --source line.mp4 --out annotated.mp4 --no-display
    dad-edge stream model.onnx --source 0 --web 8080 --mqtt mqtt://broker/line3/events   # live page, MQTT

Registered by dad_edge/cli/__init__.py through add_command(); runs until the source ends, --max-frames, q in
the window, Ctrl-C or SIGTERM, and closes every output on the way out.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dad_edge.cli.args import (finite_float, positive_int, add_batch_argument, add_runtime_arguments,
                               add_threshold_arguments, runtime_kwargs, threshold_kwargs)
from dad_edge.runtime.detector import COLOR_ORDERS


def port_number(text: str) -> int:
    v = int(text)
    if not 1 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (1 to 65535)")
    return v


def add_command(sub) -> None:
    p = sub.add_parser("stream", help="run a model on a camera, RTSP/HTTP stream, video file or image folder")
    p.add_argument("model", help="model.safetensors, .onnx or .plan / .engine")
    p.add_argument("--source", required=True,
                   help="camera index (0), csi://N (Jetson), rtsp:// or http:// URL, video file, folder or glob")
    add_batch_argument(p, 1, "frames per inference call (1: lowest latency)")
    p.add_argument("--out", type=Path, metavar="VIDEO",
                   help="write the annotated frames to this video (.mkv, .avi, .mp4, .m4v, .mov; after a kill "
                        ".mkv and .avi play up to their last 256 KiB or so, an .mp4 not at all)")
    p.add_argument("--video-segment-s", type=finite_float, metavar="S",
                   help="--out in segments of S seconds of video (VIDEO.000001.mkv, ...), each closed and whole "
                        "when the next starts: a kill loses the one being recorded at most")
    p.add_argument("--save-anomalies", type=Path, metavar="DIR", help="save anomalous frames (PNG + annotated JPEG)")
    p.add_argument("--events", type=Path, metavar="FILE", help="append one JSON line per frame to FILE")
    p.add_argument("--only-anomalies", action="store_true", help="--events: anomalous frames only")
    p.add_argument("--no-display", action="store_true", help="no window (the default needs a GUI build of OpenCV)")
    p.add_argument("--alarm-cmd", metavar="CMD",
                   help="run CMD on an anomaly (no shell; the event is in $DAD_EDGE_EVENT)")
    p.add_argument("--alarm-interval", type=finite_float, default=10.0, metavar="S",
                   help="at most one alarm per S seconds (default 10)")
    p.add_argument("--web", type=port_number, metavar="PORT",
                   help="serve a live view on http://127.0.0.1:PORT/: annotated video (MJPEG), frames/s, latency, "
                        "counts and the last anomalies")
    p.add_argument("--web-host", default="127.0.0.1", metavar="HOST",
                   help="address for --web (0.0.0.0: every interface, with no authentication)")
    p.add_argument("--mqtt", metavar="URL",
                   help="publish each event line to mqtt://HOST[:PORT]/TOPIC (QoS 1); credentials from "
                        "$DAD_EDGE_MQTT_USERNAME and $DAD_EDGE_MQTT_PASSWORD, never in the URL")
    p.add_argument("--max-frames", type=positive_int, metavar="N", help="stop after N frames")
    p.add_argument("--queue", type=positive_int, metavar="N", help="frames buffered after capture (default 2 x batch)")
    add_runtime_arguments(p)
    add_threshold_arguments(p)
    p.add_argument("--color-order", choices=COLOR_ORDERS,
                   help="of the source's frames (default: BGR for cameras and videos, RGB for image files)")
    p.add_argument("--log-every", type=finite_float, default=10.0, metavar="S", help="statistics line every S seconds")
    p.set_defaults(func=cmd_stream)


def cmd_stream(args: argparse.Namespace) -> int:
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.INFO)
    if args.video_segment_s is not None and args.out is None:
        from dad_edge.errors import ConfigError

        raise ConfigError("--video-segment-s splits the --out video into segments: give --out VIDEO.mkv too")
    # The live view and the MQTT target first: a taken port or a bad URL fails before anything opens.
    web = mqtt = None
    try:
        if args.web:
            from dad_edge.stream.web import LiveView

            web = LiveView(args.web, args.web_host)
        if args.mqtt:
            from dad_edge.stream.mqtt import MqttPublisher

            mqtt = MqttPublisher(args.mqtt)  # connects in the background: the stream never waits for it
        return _run(args, web, mqtt)
    finally:
        if mqtt is not None:
            mqtt.close()
        if web is not None:
            web.close()


def _run(args: argparse.Namespace, web, mqtt) -> int:
    from dad_edge.stream.alarms import Alarm
    from dad_edge.runtime.detector import Detector
    from dad_edge.stream.runner import Stream, stop_on_signals
    from dad_edge.stream.outputs import StreamOutputs, new_run_id
    from dad_edge.stream.capture import open_source

    log = logging.getLogger("dad_edge.stream.runner")
    alarm = Alarm(command=args.alarm_cmd, min_interval_s=args.alarm_interval) if args.alarm_cmd else None
    # The source first: a wrong URL or camera index fails before a model is loaded. Once the
    # stream runs, its capture thread owns the source and closes it.
    source = open_source(args.source)
    try:
        det = Detector(args.model, batch_size=args.batch_size, **runtime_kwargs(args), **threshold_kwargs(args))
    except BaseException:
        source.close()
        raise
    with det, Stream(det, source, batch=args.batch_size, color_order=args.color_order, queue_size=args.queue,
                     max_frames=args.max_frames, log_every_s=args.log_every) as stream:
        log.info("%s on %s", det, source)
        outputs = StreamOutputs(video=args.out, anomalies=args.save_anomalies, events=args.events,
                                only_anomalies=args.only_anomalies, display=not args.no_display,
                                fps=source.fps, image_threshold=det.thresholds.image,
                                video_segment_s=args.video_segment_s)
        run = outputs.events.run if outputs.events else new_run_id()  # MQTT lines say the same run
        if web is not None:
            web.attach(stream.stats, f"{args.model} on {source.name}")
            log.info("live view: %s", web.url)
        anomalies = 0
        try:
            with stop_on_signals(stream):
                for r in stream:
                    record = outputs.write(r, stream.stats)
                    if web is not None:
                        web.offer(r, record["boxes"])  # O(1): encoding happens in the server's threads
                    if mqtt is not None and (r.label or not args.only_anomalies):
                        mqtt.publish(record, run)
                    if r.label:
                        anomalies += 1
                        log.info("frame %d: ANOMALY score %.4f, %d region(s)", r.frame, r.score,
                                 len(record["boxes"]))
                        if alarm is not None:
                            alarm(r, record)
                    if outputs.quit_requested:
                        stream.stop()
        finally:
            outputs.close()
            if alarm is not None:
                alarm.close()
    written = [str(p) for p in (args.out, args.events, args.save_anomalies) if p]
    log.info("%d frames, %d anomalous, %d skipped, %d dropped, %d reconnects%s%s",
             stream.stats.frames, anomalies, stream.stats.skipped, stream.stats.dropped, stream.stats.reconnects,
             f"; alarms {alarm.fired} (suppressed {alarm.suppressed}, failed {alarm.failed})" if alarm else "",
             f"; wrote {', '.join(written)}" if written else "")
    return 0 if stream.stats.frames else 1
