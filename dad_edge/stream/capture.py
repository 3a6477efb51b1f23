"""Where stream frames come from: a camera, a Jetson CSI camera, a network stream, a video
file, or a folder / glob of images, all behind one small class.

    source = open_source("rtsp://host/cam")     # or 0, "csi://0", "line.mp4", "images/", "shots/*.png"
    ok, frame = source.read()                    # (True, frame) | (True, None): bad frame | (False, None)

`(True, None)` is a frame that arrived but cannot be used (empty, or an image file that is
cut short): the stream counts it and goes on; `source.last_error` says why. `(False, None)`
is the end of a finite source, or a live source that dropped: the stream reopens those.

Camera, CSI, URL and video file all go through `cv2.VideoCapture`. CSI cameras need a
GStreamer pipeline, and pip's OpenCV wheels are built without GStreamer: on a Jetson use the
system OpenCV that JetPack installs (`sudo apt install python3-opencv`, no opencv-python wheel).
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import List, Optional, Tuple, Union
from urllib.parse import parse_qsl, urlsplit

import cv2
import numpy as np

from dad_edge.errors import BackendError, ConfigError, DataError, InputError
from dad_edge.data.imageio import IMAGE_EXTENSIONS, read_image
from dad_edge.runtime.inputs import URL_SCHEMES, VIDEO_EXTENSIONS, Item, expand
from dad_edge.runtime.redact import redact_url

Frame = Optional[np.ndarray]

NETWORK_TIMEOUT_MS = 10_000  # a network stream that sends nothing this long counts as dropped
_SYSTEM_OPENCV_FIX = ("pip's opencv-python wheels never have GStreamer; on a Jetson use the OpenCV that JetPack "
                      "installs: `pip uninstall opencv-python opencv-python-headless` and `sudo apt install "
                      "python3-opencv` (or build OpenCV with -D WITH_GSTREAMER=ON)")


class FrameSource(ABC):
    """One source of frames. Subclasses set the attributes below and implement open/read/close."""

    name: str  # what the user gave, for messages and Result.source
    live: bool  # real-time (camera, network): the newest frame wins, and a drop is reopened
    color_order: str = "BGR"  # of the frames read() returns
    fps: Optional[float] = None  # nominal frame rate when the source knows it
    last_error: Optional[str] = None  # why the last read gave (True, None) or failed
    last_name: str = ""  # the name of the last frame read (its file for image folders)

    @abstractmethod
    def open(self) -> None:
        """Open (or open again); raise DataError when the source cannot be opened."""

    @abstractmethod
    def read(self) -> Tuple[bool, Frame]:
        """(True, frame) | (True, None): a bad frame, skip it | (False, None): ended or dropped."""

    def close(self) -> None:
        """Release the device, connection or file; a later open() starts again."""

    @property
    def is_open(self) -> bool:
        return True

    def reopen(self) -> None:
        """After a drop: close and open again; finite sources go on after the last frame read."""
        self.close()
        self.open()

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, live={self.live})"


class CaptureSource(FrameSource):
    """Anything cv2.VideoCapture opens: a camera index, a GStreamer pipeline, a URL or a video file."""

    def __init__(self, target: Union[int, str], name: str, live: bool, api: int = cv2.CAP_ANY,
                 params: Tuple[int, ...] = ()):
        self.target, self.name, self.live, self.api, self.params = target, name, live, api, params
        self.cap: Optional[cv2.VideoCapture] = None
        self.position = 0  # frames read so far: where a finite source resumes after a reopen
        self.frame_count: Optional[int] = None  # what a video file's header announces
        self.last_name = name

    @property
    def is_open(self) -> bool:
        return self.cap is not None

    def open(self) -> None:
        self.close()
        self.cap = cv2.VideoCapture(self.target, self.api, list(self.params))
        if not self.cap.isOpened():
            self.cap = None
            raise DataError(f"{self.name}: cannot open this {self._kind()}; {self._hint()}")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else None  # cameras and streams often report 0 or nonsense
        if not self.live:
            count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
            self.frame_count = count if count > 0 else None
            if self.position:
                self._seek(self.position)

    def _seek(self, position: int) -> None:
        """Go on after the last frame read; frame by frame where the container cannot seek exactly."""
        self.cap.set(cv2.CAP_PROP_POS_FRAMES, position)
        if int(self.cap.get(cv2.CAP_PROP_POS_FRAMES)) != position:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            for _ in range(position):
                self.cap.grab()

    def read(self) -> Tuple[bool, Frame]:
        if self.cap is None:
            return False, None
        ok, frame = self.cap.read()
        if not ok:
            self.last_error = "no frame (end of the video, or the connection dropped)"
            return False, None
        self.position += 1
        if frame is None or frame.size == 0:
            self.last_error = "empty frame"
            return True, None
        return True, frame

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None

    def _kind(self) -> str:
        if isinstance(self.target, int):
            return f"camera (index {self.target})"
        return "video file" if not self.live else ("GStreamer pipeline" if self.api == cv2.CAP_GSTREAMER
                                                   else "network stream")

    def _hint(self) -> str:
        if isinstance(self.target, int):
            return ("check that the camera is connected and not used by another program "
                    "(`ls /dev/video*` lists them on Linux), and that the index is right")
        if self.api == cv2.CAP_GSTREAMER:
            return ("check the camera cable and sensor id (`gst-launch-1.0 nvarguscamerasrc sensor-id=0 ! fakesink` "
                    "tests it), and that no other program holds the camera (`sudo systemctl restart nvargus-daemon`)")
        if self.live:
            return "check the URL, the credentials in it, and that the host is reachable"
        return "check that the file is a complete video (ffprobe shows its streams)"


class ImageSource(FrameSource):
    """Image files one by one, in name order: a folder, a glob, one file, or a list of paths."""

    live = False
    color_order = "RGB"  # read_image decodes to RGB (or gray)

    def __init__(self, items: List[Item], name: str):
        self.items, self.name = items, name
        self.position = 0

    def open(self) -> None:
        """Files are read one at a time: nothing to open, and a reopen goes on where it was."""

    def read(self) -> Tuple[bool, Frame]:
        if self.position >= len(self.items):
            return False, None
        item = self.items[self.position]
        self.position += 1
        self.last_name = item.name
        if item.error is not None:
            self.last_error = item.error
            return True, None
        try:
            return True, read_image(item.path)
        except DataError as exc:
            self.last_error = str(exc)
            return True, None


# -- parsing a source spec ---------------------------------------------------------------

def gstreamer_available() -> bool:
    """Whether this OpenCV was built with GStreamer (pip wheels never are)."""
    return bool(re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()))


def csi_pipeline(sensor_id: int = 0, width: int = 1920, height: int = 1080, fps: int = 30, flip: int = 0) -> str:
    """The GStreamer pipeline of a Jetson CSI camera: NVMM capture, hardware colour conversion, BGR appsink.

    `drop=1 max-buffers=1`: the appsink keeps only the newest frame, so a slow model never
    falls behind the camera.
    """
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! "
            f"video/x-raw(memory:NVMM), width={width}, height={height}, framerate={fps}/1, format=NV12 ! "
            f"nvvidconv flip-method={flip} ! video/x-raw, format=BGRx ! "
            f"videoconvert ! video/x-raw, format=BGR ! appsink drop=1 max-buffers=1")


def _gstreamer_source(pipeline: str, name: str) -> CaptureSource:
    if not gstreamer_available():
        raise BackendError(f"{name}: this OpenCV ({cv2.__version__}) was built without GStreamer, which CSI "
                           f"cameras and pipeline strings need; {_SYSTEM_OPENCV_FIX}")
    return CaptureSource(pipeline, name, live=True, api=cv2.CAP_GSTREAMER)


def _csi_source(spec: str) -> CaptureSource:
    """csi://N[?width=W&height=H&fps=F&flip=M] -> the nvarguscamerasrc pipeline of sensor N."""
    parts = urlsplit(spec)
    options = dict(parse_qsl(parts.query))
    allowed = {"width", "height", "fps", "flip"}
    if not parts.netloc.isdigit() or set(options) - allowed:
        raise ConfigError(f"{spec}: expected csi://N with optional ?width=W&height=H&fps=F&flip=M "
                          f"(e.g. csi://0?width=1280&height=720&fps=60)")
    try:
        values = {k: int(v) for k, v in options.items()}
    except ValueError:
        raise ConfigError(f"{spec}: width, height, fps and flip must be integers") from None
    return _gstreamer_source(csi_pipeline(int(parts.netloc), **values), spec)


def _url_source(spec: str) -> CaptureSource:
    """A network stream through FFmpeg, with timeouts so that a dead host counts as a drop, not a hang.

    Live unless the URL names a video file (http://host/clip.mp4 plays once).
    """
    if not cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG):
        raise BackendError(f"{redact_url(spec)}: this OpenCV has no FFmpeg backend for network streams; install "
                           "opencv-python-headless from pip, or a system OpenCV built with FFmpeg")
    params = (cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, NETWORK_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, NETWORK_TIMEOUT_MS)
    live = Path(urlsplit(spec).path).suffix.lower() not in VIDEO_EXTENSIONS
    # The name shows up in logs, errors and every event: never with the URL's credentials.
    return CaptureSource(spec, redact_url(spec), live=live, api=cv2.CAP_FFMPEG, params=params)


def _path_source(spec: str) -> FrameSource:
    path = Path(spec)
    if path.is_file() and path.suffix.lower() not in IMAGE_EXTENSIONS:
        return CaptureSource(str(path), spec, live=False, api=cv2.CAP_FFMPEG)
    items, _ = expand(spec)  # a folder, a glob or one image; raises DataError when none of them
    return ImageSource(items, spec)


def open_source(spec: Union[int, str, Path, List[Union[str, Path]], FrameSource]) -> FrameSource:
    """parse_source(spec), opened: raises DataError when it cannot be opened."""
    source = parse_source(spec)
    if not source.is_open:
        source.open()
    return source


def parse_source(spec: Union[int, str, Path, List[Union[str, Path]], FrameSource]) -> FrameSource:
    """Parse `spec` into a FrameSource, not opened yet (image folders and globs are listed); ConfigError,
    InputError, DataError or BackendError for a spec that names no source.

    0, "0"                  camera index (V4L2 on Linux)
    "csi://0"               Jetson CSI camera through GStreamer (nvarguscamerasrc); ?width=&height=&fps=&flip=
    "... ! appsink"         any GStreamer pipeline ending in an appsink
    "rtsp://...", "http://..."  network stream (rtsp, rtsps, rtmp, http, https, udp, tcp, srt)
    "line.mp4"              video file (any container FFmpeg reads)
    "images/", "shots/*.png", ["a.png", "b.png"]   image files, in name order
    a FrameSource           used as it is (opened if it is not yet)
    """
    if isinstance(spec, FrameSource):
        source = spec
    elif isinstance(spec, bool) or isinstance(spec, np.ndarray):
        raise InputError(f"a stream source is a camera index, URL, video file, folder or glob, not "
                         f"{type(spec).__name__}; give arrays to the Detector itself: det(frame)")
    elif isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        source = CaptureSource(int(spec), f"camera {int(spec)}", live=True)
    elif isinstance(spec, (list, tuple)):
        if not all(isinstance(p, (str, Path)) for p in spec):
            raise InputError("a list stream source must hold image paths only; give arrays to det(frames)")
        source = ImageSource(expand(list(spec))[0], f"{len(spec)} paths")
    elif isinstance(spec, (str, Path)):
        text = str(spec)
        try:
            scheme = urlsplit(text).scheme.lower() if "://" in text else ""
        except ValueError as exc:  # e.g. an unclosed [ of an IPv6 host
            raise ConfigError(f"{redact_url(text)}: not a valid URL ({exc})") from None
        if scheme == "csi":
            source = _csi_source(text)
        elif scheme in URL_SCHEMES:
            source = _url_source(text)
        elif scheme:
            raise ConfigError(f"{redact_url(text)}: unknown scheme {scheme!r}; use csi:// or one of "
                              f"{', '.join(s + '://' for s in URL_SCHEMES)}")
        elif " ! " in text:
            source = _gstreamer_source(text, "GStreamer pipeline")
        else:
            source = _path_source(text)
    else:
        raise InputError(f"a stream source is a camera index, URL, video file, folder or glob, "
                         f"not {type(spec).__name__}")
    return source
