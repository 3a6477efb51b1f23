"""The annotated video of a stream, written so that a kill (SIGKILL) loses as little as possible, as
a network video recorder does, with OpenCV's FFmpeg writer alone.

    video = VideoOutput("annotated.mkv", fps=25, segment_s=60)   # annotated.000001.mkv, .000002.mkv, ...
    video.write(bgr); ...; video.close()

A file is recorded under a name that says it is unfinished, `<stem>.partial<suffix>` (with segments
`<stem>.NNNNNN.partial<suffix>`), and renamed to its final name once closed (fsynced first, as the
atomic writes of dad_edge/artifacts/atomic.py): a file with its final name is complete. What a kill
leaves of the file being recorded depends on the container (measured with OpenCV 5.1 and its FFmpeg,
tests/test_video_kill.py, benchmarks/stream_soak.py):

- .mkv (Matroska, mp4v): readable up to the last block FFmpeg handed to the system, all but the last
  256 KiB or so of video (OpenCV's writer has no flush): at 25 frames/s up to 1.3 s of 640x480, 0.5 s
  of 1280x720, 11 s of 160x120. The choice for a recorder.
- .avi (MJPG): the same, all but the last 256 KiB (a few frames of MJPEG), about 5x the size of .mkv.
- .mp4 / .m4v / .mov (mp4v): nothing; these write their index when they close. With segment_s every
  closed segment is whole, so a kill loses the segment being recorded only.

A killed run's unfinished file is kept for the user: segments keep their `.partial` name (the next run
numbers its segments after them), a single file is renamed `<stem>.killed-<its time><suffix>` when the
next run starts, so that the new recording does not overwrite it.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np

from dad_edge.artifacts.atomic import publish, write_error
from dad_edge.errors import ConfigError, DataError

log = logging.getLogger("dad_edge.stream.runner")

# suffix -> FourCC; every pair measured to write and read back here (OpenCV's FFmpeg backend).
VIDEO_CODECS = {".mkv": "mp4v", ".avi": "MJPG", ".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v"}
KILL_SAFE = (".mkv", ".avi")  # readable after a kill up to the last block written
DEFAULT_FPS = 25.0  # for sources that do not report a frame rate (most cameras and streams)
PARTIAL = ".partial"


class VideoOutput:
    """An annotated video file, or a series of segments; opened at the first frame (its size fixes the
    video's size).

    path: the video (its suffix picks the container, VIDEO_CODECS); fps: of the file (default
    DEFAULT_FPS); segment_s: close the file every segment_s seconds of video (round(segment_s x fps)
    frames) and go on in the next one, `<stem>.000001<suffix>`, `<stem>.000002<suffix>`, ...
    """

    def __init__(self, path, fps: Optional[float] = None, segment_s: Optional[float] = None):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_CODECS:
            raise ConfigError(f"{self.path}: cannot tell the video format from {self.path.suffix or 'no suffix'!r}; "
                              f"use one of {', '.join(VIDEO_CODECS)} (.mkv is readable after a kill)")
        if segment_s is not None and not (math.isfinite(segment_s) and segment_s > 0):
            raise ConfigError(f"{self.path}: a video segment of {segment_s} s; give a number of seconds above 0")
        self.fourcc = VIDEO_CODECS[suffix]
        self.fps = fps if fps and math.isfinite(fps) and fps > 0 else DEFAULT_FPS
        self.segment_frames = max(1, round(segment_s * self.fps)) if segment_s else None
        self.size = None  # (w, h)
        self.writer: Optional[cv2.VideoWriter] = None
        self.recording: Optional[Path] = None  # the .partial file being written
        self.frames = 0  # written in all
        self.segment_count = 0  # frames in the file being written
        self.files: List[Path] = []  # the finished files, in order
        self._prefix = re.compile(rf"^{re.escape(self.path.stem)}\.(\d{{6,}})(?:{re.escape(PARTIAL)})?"
                                  rf"{re.escape(self.path.suffix)}$")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(self.path, exc) from None
        self._probe()
        self._next_index = self._first_free_index() if self.segment_frames else None
        if not self.segment_frames:
            self._keep_killed_recording()
        if suffix not in KILL_SAFE and not self.segment_frames:
            log.warning("%s: an %s file is unreadable if the stream is killed (SIGKILL) before it "
                        "closes; .mkv keeps all but its last 256 KiB or so, --video-segment-s S every finished "
                        "segment", self.path, suffix)

    # -- naming ------------------------------------------------------------------------------------------
    def _segment_name(self, index: int, partial: bool) -> Path:
        return self.path.with_name(f"{self.path.stem}.{index:06d}{PARTIAL if partial else ''}{self.path.suffix}")

    def _first_free_index(self) -> int:
        """1 + the highest segment number in the folder (finished or left by a killed run): never overwrite."""
        highest = 0
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.path.parent):
                m = self._prefix.match(entry.name)
                if m:
                    highest = max(highest, int(m[1]))
        return highest + 1

    def _single_partial(self) -> Path:
        return self.path.with_name(f"{self.path.stem}{PARTIAL}{self.path.suffix}")

    def _keep_killed_recording(self) -> None:
        """The unfinished file of a killed run (one file, no segments) moves aside: the new one takes its name."""
        old = self._single_partial()
        try:
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(old.stat().st_mtime))
        except OSError:
            return  # none
        for n in range(1, 1000):
            kept = self.path.with_name(f"{self.path.stem}.killed-{stamp}{'' if n == 1 else f'-{n}'}{self.path.suffix}")
            if not kept.exists():
                break
        try:
            os.replace(old, kept)
        except OSError as exc:
            raise write_error(old, exc) from None
        readable = ("readable up to its last 256 KiB or so" if self.path.suffix.lower() in KILL_SAFE
                    else "an unfinished mp4 has no index: most players refuse it")
        log.warning("kept the video a killed run was recording as %s (%s)", kept, readable)

    def _probe(self) -> None:
        """Fail now, before the stream starts, when this machine's OpenCV cannot write the format here."""
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.probe.", suffix=self.path.suffix,
                                       dir=self.path.parent)
        except OSError as exc:
            raise write_error(self.path, exc) from None
        os.close(fd)
        try:
            writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (16, 16))
            ok = writer.isOpened()
            writer.release()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if not ok:
            raise DataError(f"{self.path}: this machine's OpenCV cannot write {self.fourcc} video in "
                            f"{self.path.suffix} (its FFmpeg lacks the encoder or the container); use --out "
                            f"with .mkv (mp4v) or .avi (MJPG), and check cv2.getBuildInformation() for FFMPEG: YES")

    # -- writing -----------------------------------------------------------------------------------------
    def _open(self) -> None:
        if self.segment_frames:
            index = self._next_index
            self._next_index += 1
            self.recording, final = self._segment_name(index, partial=True), self._segment_name(index, partial=False)
        else:
            self.recording, final = self._single_partial(), self.path
        if final.is_dir():  # found now rather than after a whole recording
            self.recording = None
            raise DataError(f"{final}: cannot write the video there, it is a folder; give --out a file name")
        self.writer = cv2.VideoWriter(str(self.recording), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, self.size)
        if not self.writer.isOpened():
            self.writer = None
            with contextlib.suppress(OSError):
                if self.recording.is_file() and self.recording.stat().st_size == 0:
                    self.recording.unlink()
            self.recording = None
            raise DataError(f"{self.path}: OpenCV cannot write {self.fourcc} video to {self.path.suffix} here "
                            f"({self.size[0]}x{self.size[1]}); check that {self.path.parent} is writable, or use "
                            f"--out with .mkv (mp4v) or .avi (MJPG)")
        self.segment_count = 0

    def _finish(self) -> None:
        """Close the file being written (this writes its index), fsync it, give it its final name."""
        writer, recording = self.writer, self.recording
        self.writer = self.recording = None
        if writer is None:
            return
        writer.release()
        final = (self.path if not self.segment_frames else
                 self._segment_name(int(self._prefix.match(recording.name)[1]), partial=False))
        publish(recording, final)
        self.files.append(final)

    def write(self, bgr: np.ndarray) -> None:
        if self.size is None:
            self.size = (bgr.shape[1], bgr.shape[0])
        if self.writer is not None and self.segment_frames and self.segment_count >= self.segment_frames:
            self._finish()
        if self.writer is None:
            self._open()
        if (bgr.shape[1], bgr.shape[0]) != self.size:  # image folders may mix sizes
            bgr = cv2.resize(bgr, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(bgr)
        self.frames += 1
        self.segment_count += 1

    def close(self) -> None:
        """Finish the file being written: its index, and its final name."""
        self._finish()
        if self.segment_frames and self.files:
            log.info("video: %d frames in %d segment(s), %s to %s", self.frames, len(self.files),
                     self.files[0].name, self.files[-1].name)
