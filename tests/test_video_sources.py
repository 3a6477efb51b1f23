"""Frame sources: parsing a source spec, reading video files and image folders, reopening."""
import numpy as np
import pytest

from dad_edge.errors import BackendError, ConfigError, DataError, InputError
from dad_edge.data.imageio import read_image, write_image
from dad_edge.stream.capture import (CaptureSource, ImageSource, csi_pipeline, gstreamer_available, open_source)
from stream_support import read_video, write_video


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = write_video(tmp_path_factory.mktemp("video") / "line.mp4", 12, defective=[5])
    return path, read_video(path)


def test_video_file_reads_every_frame_then_ends(video):
    path, frames = video
    with open_source(str(path)) as source:
        assert isinstance(source, CaptureSource) and not source.live and source.color_order == "BGR"
        assert source.fps == 25.0 and source.frame_count == len(frames) == 12
        got = []
        while True:
            ok, frame = source.read()
            if not ok:
                break
            got.append(frame)
    assert len(got) == 12 and all(np.array_equal(a, b) for a, b in zip(got, frames))


def test_video_file_reopens_after_the_last_frame_read(video):
    path, frames = video
    with open_source(path) as source:
        for _ in range(4):
            source.read()
        assert open_source(source) is source  # an open source is used as it is, not opened again
        source.read()
        source.reopen()
        ok, frame = source.read()
    assert ok and np.array_equal(frame, frames[5])


def test_folder_runs_in_name_order_and_flags_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    images = {name: rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for name in ("b.png", "a.png", "c.png")}
    for name, img in images.items():
        write_image(tmp_path / name, img)
    data = (tmp_path / "c.png").read_bytes()
    (tmp_path / "b2.png").write_bytes(data[: len(data) // 2])  # cut short
    (tmp_path / "notes.txt").write_text("not an image")
    with open_source(tmp_path) as source:
        assert isinstance(source, ImageSource) and not source.live and source.color_order == "RGB"
        reads = []
        while True:
            ok, frame = source.read()
            if not ok:
                break
            reads.append((source.last_name.split("/")[-1], frame, source.last_error if frame is None else None))
    assert [r[0] for r in reads] == ["a.png", "b.png", "b2.png", "c.png", "notes.txt"]
    assert np.array_equal(reads[0][1], images["a.png"]) and np.array_equal(reads[3][1], read_image(tmp_path / "c.png"))
    assert reads[2][1] is None and "truncated" in reads[2][2]
    assert reads[4][1] is None and "not an image file" in reads[4][2]


def test_glob_and_list_of_paths(tmp_path):
    for name in ("x1.png", "x2.png", "y.png"):
        write_image(tmp_path / name, np.zeros((8, 8, 3), np.uint8))
    with open_source(str(tmp_path / "x*.png")) as source:
        assert [i.name.split("/")[-1] for i in source.items] == ["x1.png", "x2.png"]
    with open_source([tmp_path / "y.png", str(tmp_path / "x1.png")]) as source:
        assert [i.name.split("/")[-1] for i in source.items] == ["y.png", "x1.png"]


def test_camera_that_is_not_there(tmp_path):
    with pytest.raises(DataError, match=r"camera \(index 63\).*/dev/video"):
        open_source(63)
    with pytest.raises(DataError, match="camera"):
        open_source("63")


def test_network_url_that_refuses():
    with pytest.raises(DataError, match="network stream.*URL"):
        open_source("rtsp://127.0.0.1:9/cam")  # port 9: connection refused at once


def test_csi_spec_and_pipeline():
    pipeline = csi_pipeline(1, width=1280, height=720, fps=60, flip=2)
    assert pipeline.startswith("nvarguscamerasrc sensor-id=1 ! ")
    assert "width=1280, height=720, framerate=60/1" in pipeline and "flip-method=2" in pipeline
    assert pipeline.endswith("format=BGR ! appsink drop=1 max-buffers=1")
    with pytest.raises(ConfigError, match="csi://N"):
        open_source("csi://0?exposure=3")
    with pytest.raises(ConfigError, match="integers"):
        open_source("csi://0?width=wide")


def test_csi_without_gstreamer_names_the_fix():
    if gstreamer_available():
        pytest.skip("this OpenCV has GStreamer, so the missing-GStreamer message cannot be shown")
    for spec in ("csi://0", "videotestsrc ! videoconvert ! appsink"):
        with pytest.raises(BackendError, match="without GStreamer.*apt install python3-opencv"):
            open_source(spec)


def test_specs_that_are_not_sources(tmp_path):
    with pytest.raises(ConfigError, match="unknown scheme 'ftp'"):
        open_source("ftp://host/cam")
    with pytest.raises(DataError, match="no such file or folder"):
        open_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(InputError, match="det\\(frame\\)"):
        open_source(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError):
        open_source(True)
