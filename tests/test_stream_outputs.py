"""Stream outputs on hand-made results: boxes, event records, the video writer, the events file."""
import json
import time

import cv2
import numpy as np
import pytest

from dad_edge.errors import ConfigError, DataError
from dad_edge.stream.runner import StreamResult
from dad_edge.stream.outputs import (MAX_BOXES, EventLog, StreamOutputs, VideoOutput, annotate, anomaly_boxes,
                                     event_record, gui_available)


def result(label=True, with_mask=True, frame=3, shape=(60, 80)):
    amap = np.zeros(shape, np.float32)
    amap[10:20, 5:35] = 0.9  # a large region
    amap[40:44, 60:63] = 0.7  # a small one
    return StreamResult("line.mp4", score=0.8, normalized_score=0.6, label=label, anomaly_map=amap,
                        mask=amap >= 0.5 if with_mask else None, image=np.full((*shape, 3), 100, np.uint8),
                        frame=frame, time=1700000000.1234, latency_ms=12.345)


def test_boxes_of_the_mask_regions_largest_first():
    assert anomaly_boxes(result()) == [[5, 10, 30, 10], [60, 40, 3, 4]]
    assert anomaly_boxes(result(), min_area=20) == [[5, 10, 30, 10]]
    assert anomaly_boxes(result(label=False)) == []  # a good frame has no anomalous regions


def test_boxes_without_a_pixel_threshold_come_from_the_image_threshold():
    r = result(with_mask=False)
    assert anomaly_boxes(r) == []  # nothing to threshold with
    assert anomaly_boxes(r, image_threshold=0.8) == [[5, 10, 30, 10]]


def test_boxes_are_capped():
    r = result()
    r.mask = np.zeros((60, 80), bool)
    r.mask[::3, ::3] = True  # 400 one-pixel regions
    assert len(anomaly_boxes(r)) == MAX_BOXES


def test_event_record_is_json():
    record = json.loads(json.dumps(event_record(result(), [[5, 10, 30, 10]], saved="frame_00000003.png")))
    assert record == {"frame": 3, "time": 1700000000.123, "source": "line.mp4", "score": 0.8,
                      "normalized_score": 0.6, "label": True, "boxes": [[5, 10, 30, 10]], "latency_ms": 12.35,
                      "saved": "frame_00000003.png"}


def test_annotated_frame_is_bgr_at_the_frame_size():
    out = annotate(result(), [[5, 10, 30, 10]])
    assert out.shape == (60, 80, 3) and out.dtype == np.uint8
    assert tuple(out[10, 5]) == (40, 40, 255)  # the box edge, red in BGR


def test_video_output_mixed_sizes_and_formats(tmp_path):
    video = VideoOutput(tmp_path / "sub" / "out.avi", fps=10)
    video.write(np.zeros((60, 80, 3), np.uint8))
    video.write(np.zeros((30, 50, 3), np.uint8))  # resized to the first frame's size
    video.close()
    cap = cv2.VideoCapture(str(tmp_path / "sub" / "out.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 2 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 80
    with pytest.raises(ConfigError, match="video format"):
        VideoOutput(tmp_path / "out.gif")


def test_event_log_appends_complete_lines_and_names_the_run(tmp_path):
    runs = []
    for _ in range(2):  # two runs into one file: frame numbers restart, the run tells them apart
        log = EventLog(tmp_path / "events.jsonl")
        log.write({"frame": 0})
        log.write({"frame": 1})
        log.close()
        runs.append(log.run)
    lines = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == [0, 1, 0, 1]
    assert runs[0] != runs[1] and [x["run"] for x in lines] == [runs[0]] * 2 + [runs[1]] * 2


def test_outputs_together(tmp_path, caplog):
    headless = gui_available() is not None  # then asking for a window warns and goes on without one
    outputs = StreamOutputs(video=tmp_path / "a.mp4", anomalies=tmp_path / "anomalies",
                            events=tmp_path / "e.jsonl", only_anomalies=True, display=headless)
    assert outputs.display is None and ("no window" in caplog.text) == headless
    outputs.write(result(label=False, frame=0))
    record = outputs.write(result(frame=1))
    outputs.close()
    assert record["saved"] == "frame_00000001.png" and record["boxes"] == [[5, 10, 30, 10], [60, 40, 3, 4]]
    assert sorted(p.name for p in (tmp_path / "anomalies").iterdir()) == ["frame_00000001.png",
                                                                        "frame_00000001_annotated.jpg"]
    lines = (tmp_path / "e.jsonl").read_text().splitlines()
    assert [json.loads(x)["frame"] for x in lines] == [1]
    assert int(cv2.VideoCapture(str(tmp_path / "a.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)) == 2


def test_a_failing_background_writer_surfaces_and_the_rest_still_closes(tmp_path):
    (tmp_path / "taken.mp4").mkdir()  # a folder where the video file should go
    outputs = StreamOutputs(video=tmp_path / "taken.mp4", events=tmp_path / "e.jsonl")
    with pytest.raises(DataError, match="cannot write"):
        try:  # as the CLI does
            for frame in range(20):
                outputs.write(result(frame=frame))
                time.sleep(0.01)
        finally:
            outputs.close()
    assert outputs.events.file.closed and json.loads((tmp_path / "e.jsonl").read_text().splitlines()[0])["frame"] == 0
