"""Media decoding: probe files, read segment frames (decord) and 16 kHz mono audio (torchcodec).

Video frames come from decord (bundled FFmpeg) at a requested fps, RGB uint8, read in bounded chunks so a
long video is never held whole in memory. Audio comes from torchcodec, which seeks to the segment and
resamples to the requested rate while decoding, so a segment of an hour-long file costs only its own span.
Every failure is a `MediaError` naming the file and the cause; a file without an audio stream is not an
error: `read_audio` returns an `AudioClip` marked missing.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from affectflow.pipeline.core.errors import MediaError
from affectflow.pipeline.core.records import Recording

SILENCE_RMS = 1e-4
"""Audio whose RMS (float samples in [-1, 1]) is below this is flagged silent (about -80 dBFS)."""


@dataclass(frozen=True)
class AudioClip:
    """Mono audio of one segment: samples float32 [N] in [-1, 1] at `sample_rate` Hz."""

    samples: np.ndarray
    sample_rate: int
    missing_reason: str | None = None
    silent: bool = False

    @property
    def is_missing(self) -> bool:
        return self.missing_reason is not None

    @property
    def duration(self) -> float:
        return len(self.samples) / float(self.sample_rate)


@dataclass(frozen=True)
class VideoFrames:
    """Frames of one segment: frames uint8 [T, H, W, 3] RGB; times float64 [T] seconds in the file."""

    frames: np.ndarray
    times: np.ndarray

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def load_decoders(audio: bool = True, video: bool = True) -> None:
    """Import the decoding libraries now (torchcodec for audio, decord for video).

    Call it before forking decoding workers: a forked worker inherits the loaded libraries instead of
    importing them itself (torchcodec's import, which locates FFmpeg, takes seconds per process).
    """
    if audio:
        import torchcodec.decoders  # noqa: F401
    if video:
        import decord  # noqa: F401


_FILE_KINDS = {stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket", stat.S_IFCHR: "character device",
               stat.S_IFBLK: "block device", stat.S_IFDIR: "folder"}


def _check_file(path: Path) -> None:
    """MediaError unless `path` (after its symlinks) is a non-empty regular file. Decided from `stat` alone:
    opening a FIFO to read it would block until a writer comes."""
    try:
        info = os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise MediaError(path, "symlink loop") from None
        if error.errno == errno.ENOENT:
            raise MediaError(path, "file not found") from None
        raise MediaError(path, f"cannot read file ({error.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise MediaError(path, f"not a regular file ({_FILE_KINDS.get(stat.S_IFMT(info.st_mode), 'special file')})")
    if info.st_size == 0:
        raise MediaError(path, "file is empty (0 bytes)")


@contextlib.contextmanager
def opened_path(path: Path) -> Iterator[str]:
    """A path string the decoders (FFmpeg through decord, torchcodec, PyAV) can open for `path`.

    A POSIX file name is bytes; one that is not UTF-8 (a Latin-1 `caf\xe9.wav`) reaches Python as
    surrogate escapes, which these libraries cannot encode. Such a file is opened here and handed over as
    `/proc/self/fd/N`: the decoder opens that name itself (its own descriptor), so ours is closed when the
    block ends. Other names pass through unchanged (and on systems without /proc, as they are)."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        if not os.path.isdir("/proc/self/fd"):
            yield text
            return
        descriptor = os.open(path, os.O_RDONLY)
        try:
            yield f"/proc/self/fd/{descriptor}"
        finally:
            os.close(descriptor)
        return
    yield text


def _open_video(path: Path):
    """decord VideoReader or None when the file has no decodable video stream."""
    import decord

    _quiet_decord(decord)
    try:
        with opened_path(path) as name:
            reader = decord.VideoReader(name, ctx=decord.cpu(0), num_threads=1)
    except (RuntimeError, decord.DECORDError):
        return None
    if len(reader) == 0:
        return None
    return reader


def _quiet_decord(decord) -> None:
    # FFmpeg's own log lines ("moov atom not found") add nothing to our MediaError messages.
    try:
        decord.logging.set_level(decord.logging.QUIET)
    except AttributeError:
        pass


def _open_audio(path: Path, sample_rate: int | None = None):
    """(decoder, None) or (None, reason): reason is 'no audio stream' or the decoder's error."""
    from torchcodec.decoders import AudioDecoder

    try:
        kwargs = {"num_channels": 1}
        if sample_rate is not None:
            kwargs["sample_rate"] = sample_rate
        with opened_path(path) as name:
            return AudioDecoder(name, **kwargs), None
    except ValueError as error:
        # torchcodec raises ValueError when the container opens but holds no audio stream.
        return None, f"no audio stream ({str(error).splitlines()[0]})"
    except RuntimeError as error:
        return None, f"cannot open: {_first_line(error, path)}"


def _first_line(error: Exception, path: Path | None = None) -> str:
    """The useful part of a decoder error: its first line, without the C++ source location and path."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if path is not None and str(path) in text:
        text = text.split(str(path))[-1].strip(" :")
    return text[-200:] or type(error).__name__


def probe(path: str | Path) -> Recording:
    """Describe a media file (streams, duration, fps, size); MediaError when it cannot be read at all."""
    path = Path(path)
    _check_file(path)
    audio, audio_problem = _open_audio(path)
    if audio is None and audio_problem.startswith("cannot open"):
        # FFmpeg cannot open the container at all: decord (the same FFmpeg) would only fail louder.
        raise MediaError(path, f"not a readable audio or video file ({audio_problem})")
    video = _open_video(path)
    if video is None and audio is None:
        raise MediaError(path, f"not a readable audio or video file ({audio_problem})")
    fps = width = height = num_frames = None
    duration = 0.0
    if video is not None:
        fps = float(video.get_avg_fps())
        num_frames = len(video)
        height, width = video[0].shape[:2]
        duration = float(video.get_frame_timestamp(num_frames - 1)[1])
    audio_rate = None
    if audio is not None:
        audio_rate = int(audio.metadata.sample_rate)
        audio_duration = audio.metadata.duration_seconds_from_header or 0.0
        duration = max(duration, float(audio_duration))
    return Recording(path=path, duration=duration, has_video=video is not None, has_audio=audio is not None,
                     fps=fps, width=width, height=height, num_frames=num_frames, audio_sample_rate=audio_rate)


def _check_span(path: Path, start: float, end: float | None) -> None:
    if start < 0 or (end is not None and end <= start):
        raise MediaError(path, f"invalid segment span start={start} end={end}")


def read_audio(path: str | Path, start: float = 0.0, end: float | None = None,
               sample_rate: int = 16000) -> AudioClip:
    """Mono float32 audio of [start, end) seconds at `sample_rate` Hz.

    A file without an audio stream gives an AudioClip with missing_reason="no audio stream..."; a track
    whose RMS is below SILENCE_RMS is flagged `silent`. Unreadable files raise MediaError.
    """
    path = Path(path)
    _check_file(path)
    _check_span(path, start, end)
    decoder, problem = _open_audio(path, sample_rate)
    if decoder is None:
        if problem.startswith("no audio stream"):
            if _open_video(path) is None:
                raise MediaError(path, "not a readable audio or video file")
            return AudioClip(np.zeros(0, dtype=np.float32), sample_rate, missing_reason="no audio stream")
        raise MediaError(path, problem)
    try:
        samples = decoder.get_samples_played_in_range(start_seconds=start, stop_seconds=end)
    except (RuntimeError, ValueError) as error:
        raise MediaError(path, f"audio decoding failed for span {start}-{end}: {_first_line(error)}") from None
    data = samples.data.mean(dim=0).numpy().astype(np.float32, copy=False)
    if data.size == 0:
        return AudioClip(data, sample_rate, missing_reason=f"no audio samples in span {start}-{end}")
    rms = float(np.sqrt(np.mean(np.square(data, dtype=np.float64))))
    return AudioClip(data, sample_rate, silent=rms < SILENCE_RMS)


FRAME_CHUNK_BYTES = 32 * 2 ** 20
"""Most bytes of decoded RGB frames held at once by `iter_frame_chunks` (width x height x 3 x frames):
32 MiB is 1 frame of 4K (3840x2160), 6 of 1706x960 (4K decoded for 96 px crops), 12 of 1280x720, 48 of
640x360. Measured on a 40 s 4K clip (faces at 2 fps, 1706x960): 32 MiB peaks ~0.4 GB above the detector,
96 MiB ~0.8 GB (the decoder's copies of the chunk come on top of it)."""
AUDIO_WINDOW_SECONDS = 30.0
"""Span `iter_audio_windows` reads at a time (Whisper's window): a long recording is never decoded whole."""


def frames_per_chunk(height: int, width: int, budget_bytes: int = FRAME_CHUNK_BYTES) -> int:
    """Frames of [height, width, 3] uint8 that fit `budget_bytes` (at least 1: one frame is always allowed)."""
    if height <= 0 or width <= 0 or budget_bytes <= 0:
        raise ValueError(f"frames_per_chunk needs a positive size and budget, got {height}x{width}, {budget_bytes}")
    return max(1, budget_bytes // (height * width * 3))


def decode_size(height: int, width: int, max_short_side: int | None) -> tuple[int, int]:
    """(height, width) to decode frames of [height, width] at: scaled down (aspect kept, even sizes) so the
    shorter side is at most `max_short_side`; unchanged when it already is or when None."""
    short = min(height, width)
    if max_short_side is None or short <= max_short_side:
        return height, width
    scale = max_short_side / short
    return max(2, int(round(height * scale / 2)) * 2), max(2, int(round(width * scale / 2)) * 2)


def frame_start_times(reader) -> np.ndarray:
    """Presentation time (s) at which each frame of a decord reader starts: float64 [N], non-decreasing."""
    return reader.get_frame_timestamp(np.arange(len(reader)).tolist())[:, 0].astype(np.float64)


def sample_frame_indices(starts: np.ndarray, start: float, end: float | None, fps: float | None,
                         duration: float) -> np.ndarray:
    """Indices of the frames shown at start + k / fps (k = 0, 1, ...) before `end` (None = `duration`),
    from the frames' start times `starts` [N]: sampling by timestamp, so a variable-frame-rate video
    is sampled evenly in time; every frame of the span when `fps` is None. int64 [K], unique, sorted."""
    shown = lambda times: np.clip(np.searchsorted(starts, np.asarray(times) + 1e-6, side="right") - 1, 0, None)
    first = int(shown(start))
    stop = duration if end is None else min(end, duration)
    if fps is None:
        last = int(np.searchsorted(starts, stop - 1e-6, side="left"))
        return np.arange(first, max(last, first + 1), dtype=np.int64)
    targets = np.arange(start, max(stop, start + 1e-9), 1.0 / fps)
    return np.unique(shown(targets)).astype(np.int64)


def iter_audio_windows(path: str | Path, window_seconds: float = AUDIO_WINDOW_SECONDS,
                       sample_rate: int = 16000) -> Iterator[np.ndarray]:
    """The whole audio track as consecutive mono float32 windows of round(window_seconds * sample_rate)
    samples (the last may be shorter), decoded and resampled as a stream (PyAV, FFmpeg's resampler): the
    windows joined are one continuous decode, and a recording of any length costs one window of memory.

    Raises MediaError when the file cannot be opened or has no audio stream.
    """
    import av

    path = Path(path)
    _check_file(path)
    size = int(round(window_seconds * sample_rate))
    try:
        with opened_path(path) as name:
            container = av.open(name, metadata_errors="ignore")
    except av.FFmpegError as error:
        raise MediaError(path, f"cannot open: {_first_line(error, path)}") from None
    with container:
        if not container.streams.audio:
            raise MediaError(path, "no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        buffer, held = [], 0
        for frame in _decoded_audio_frames(container, path):
            for resampled in resampler.resample(frame):
                buffer.append(resampled.to_ndarray().reshape(-1))
                held += buffer[-1].size
            while held >= size:
                joined = np.concatenate(buffer)
                yield joined[:size]
                buffer, held = [joined[size:]], held - size
        buffer.extend(resampled.to_ndarray().reshape(-1) for resampled in resampler.resample(None))
        rest = np.concatenate(buffer) if buffer else np.zeros(0, np.float32)
        for offset in range(0, rest.size, size):
            yield rest[offset: offset + size]


def _decoded_audio_frames(container, path: Path):
    """The audio frames of the first audio stream; frames FFmpeg rejects as invalid data are skipped."""
    import av

    frames = container.decode(audio=0)
    while True:
        try:
            yield next(frames)
        except StopIteration:
            return
        except av.error.InvalidDataError:
            continue
        except av.FFmpegError as error:
            raise MediaError(path, f"audio decoding failed: {_first_line(error, path)}") from None


def _frame_indices(reader, path: Path, start: float, end: float | None, fps: float | None,
                   max_frames: int | None) -> np.ndarray:
    stamps = reader.get_frame_timestamp([len(reader) - 1])
    duration = float(stamps[0, 1])
    if start >= duration:
        raise MediaError(path, f"segment start {start:.3f}s is beyond the video ({duration:.3f}s)")
    indices = sample_frame_indices(frame_start_times(reader), start, end, fps, duration)
    if max_frames is not None and len(indices) > max_frames:
        indices = indices[np.linspace(0, len(indices) - 1, max_frames).round().astype(np.int64)]
    return indices


def _video_size(reader, index: int) -> tuple[int, int]:
    """(height, width) of the video's frames (decodes one frame)."""
    return tuple(reader.get_batch([index]).shape[1:3])


def iter_frame_chunks(path: str | Path, start: float = 0.0, end: float | None = None, fps: float | None = None,
                      budget_bytes: int = FRAME_CHUNK_BYTES, max_frames: int | None = None,
                      max_short_side: int | None = None) -> Iterator[VideoFrames]:
    """Yield the segment's frames (sampled by timestamp at `fps`, every frame when None) in chunks of at most
    `budget_bytes` of RGB (see `frames_per_chunk`), so memory is bounded whatever the resolution and length.

    max_short_side: frames whose shorter side is larger are scaled down by the decoder to that size
    (aspect kept): a 4K clip is never held at full resolution when the caller needs less.
    """
    path = Path(path)
    _check_file(path)
    _check_span(path, start, end)
    reader = _open_video(path)
    if reader is None:
        _, problem = _open_audio(path)
        raise MediaError(path, "no video stream (audio only)" if problem is None else f"no decodable video stream; {problem}")
    if fps is not None and fps >= float(reader.get_avg_fps() or 0.0) > 0:
        fps = None  # at or above the native (average) rate: every frame of the span
    indices = _frame_indices(reader, path, start, end, fps, max_frames)
    try:
        height, width = _video_size(reader, int(indices[0]))
        size = decode_size(height, width, max_short_side)
        if size != (height, width):
            import decord

            with opened_path(path) as name:
                reader = decord.VideoReader(name, ctx=decord.cpu(0), num_threads=1, width=size[1], height=size[0])
    except Exception as error:  # decord raises bare DECORDError/RuntimeError subclasses
        raise MediaError(path, f"frame decoding failed near frame {int(indices[0])}: {_first_line(error)}") from None
    chunk_size = frames_per_chunk(*size, budget_bytes)
    for offset in range(0, len(indices), chunk_size):
        chunk = indices[offset: offset + chunk_size]
        try:
            frames = reader.get_batch(chunk.tolist()).asnumpy()
            times = reader.get_frame_timestamp(chunk.tolist())[:, 0].astype(np.float64)
        except Exception as error:  # decord raises bare DECORDError/RuntimeError subclasses
            raise MediaError(path, f"frame decoding failed near frame {int(chunk[0])}: {_first_line(error)}") from None
        yield VideoFrames(frames=frames, times=times)


def read_frames(path: str | Path, start: float = 0.0, end: float | None = None, fps: float | None = None,
                max_frames: int | None = None) -> VideoFrames:
    """All frames of [start, end) sampled at `fps`: frames uint8 [T, H, W, 3], times [T] seconds."""
    chunks = list(iter_frame_chunks(path, start, end, fps, max_frames=max_frames))
    return VideoFrames(frames=np.concatenate([c.frames for c in chunks]), times=np.concatenate([c.times for c in chunks]))
