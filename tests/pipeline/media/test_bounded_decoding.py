"""Decoding with bounded memory and by timestamp: byte-budgeted frame chunks, frames decoded at the size
the face crops need, variable-frame-rate video sampled evenly in time, long audio read in windows."""

import subprocess

import numpy as np
import pytest

from affectflow.pipeline.media.decode import (
    FRAME_CHUNK_BYTES, decode_size, frames_per_chunk, iter_audio_windows, iter_frame_chunks, probe, read_audio,
    read_frames, sample_frame_indices,
)
from affectflow.pipeline.media.faces import MIN_FACE_FRACTION, FaceDetector
from factories.media import require_tool


def test_chunk_size_follows_the_byte_budget():
    frame_4k = 2160 * 3840 * 3
    assert frames_per_chunk(2160, 3840, FRAME_CHUNK_BYTES) == FRAME_CHUNK_BYTES // frame_4k
    assert frames_per_chunk(2160, 3840, FRAME_CHUNK_BYTES) * frame_4k <= FRAME_CHUNK_BYTES
    assert frames_per_chunk(2160, 3840, 1) == 1  # one frame is always allowed
    assert frames_per_chunk(360, 640, 10 * 360 * 640 * 3 + 5) == 10
    with pytest.raises(ValueError):
        frames_per_chunk(0, 640)


def test_chunks_of_a_video_stay_within_the_budget(media):
    budget = 5 * 240 * 320 * 3 + 100
    chunks = list(iter_frame_chunks(media["talking_face"], fps=None, budget_bytes=budget))
    assert all(chunk.frames.nbytes <= budget for chunk in chunks)
    assert sum(len(chunk) for chunk in chunks) == 50 and len(chunks) == 10


def test_large_frames_are_decoded_at_the_size_the_crops_need(media):
    detector = FaceDetector(crop_size=96, min_face_fraction=MIN_FACE_FRACTION)
    assert detector.needed_short_side() == 960  # a face of a tenth of the shorter side spans the 96 px crop
    assert FaceDetector(crop_size=96).needed_short_side() is None  # no fraction: full resolution
    assert decode_size(2160, 3840, 960) == (960, 1706)  # 4K: 4.9 MB a frame instead of 24.9 MB
    assert decode_size(360, 640, 960) == (360, 640)
    frames = read_frames(media["talking_face"], fps=2).frames
    small = next(iter_frame_chunks(media["talking_face"], fps=2, max_short_side=120)).frames
    assert small.shape[1:] == (120, 160, 3) and frames.shape[1:] == (240, 320, 3)


def test_sampling_is_by_timestamp():
    starts = np.concatenate([np.arange(80) / 40.0, 2.0 + np.arange(20) * 0.465])  # 40 fps for 2 s, then ~2 fps
    indices = sample_frame_indices(starts, 0.0, None, 2.0, duration=11.3)
    times = starts[indices]
    assert (times < 2.0).sum() == 4  # 0, 0.5, 1, 1.5 s: not 4 s worth of frames at the average rate
    assert np.all(np.diff(times) > 0) and times[-1] > 10.0


@pytest.fixture(scope="module")
def variable_rate_video(tmp_path_factory):
    """A variable-frame-rate clip made with ffmpeg setpts: ~25 fps for its first 2 s, then a frame every
    ~0.46 s to ~24 s (the average rate, ~4 fps, puts half of the frame indices in the first 2 s)."""
    path = tmp_path_factory.mktemp("vfr") / "vfr.mp4"
    subprocess.run([require_tool("ffmpeg"), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc=size=160x120:rate=25", "-frames:v", "100", "-vf",
                    "setpts='if(lt(N,80),N/40,2+(N-80)*0.465)/TB'", "-fps_mode", "vfr", "-c:v", "libx264",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def test_variable_frame_rate_video_is_sampled_evenly_in_time(variable_rate_video):
    duration = probe(variable_rate_video).duration
    times = read_frames(variable_rate_video, fps=2).times
    assert duration > 20 and (times < 2.0).sum() <= 4  # 2 s at 2 fps (frame-index sampling put 25 of 49 here)
    native_gap = float(np.diff(read_frames(variable_rate_video).times).max())
    # a sample is the frame shown at k / fps: consecutive samples are at most 1 / fps + one frame apart
    assert np.all(np.diff(times) <= 0.5 + native_gap + 1e-6) and times[-1] >= duration - 0.5 - native_gap


@pytest.fixture(scope="module")
def long_audio(tmp_path_factory):
    """65 s of a tone in noise as mp3 (three 30 s windows, the last partial)."""
    path = tmp_path_factory.mktemp("long") / "long.mp3"
    subprocess.run([require_tool("ffmpeg"), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=300:sample_rate=44100", "-f", "lavfi", "-i", "anoisesrc=a=0.1:r=44100:seed=1",
                    "-filter_complex", "amix", "-t", "65", str(path)], check=True)
    return path


def test_long_audio_read_in_windows_is_the_whole_read(long_audio):
    windows = list(iter_audio_windows(long_audio, window_seconds=30.0))
    assert [w.size for w in windows[:-1]] == [480000, 480000] and 0 < windows[-1].size <= 480000
    whole = read_audio(long_audio).samples
    joined = np.concatenate(windows)
    assert joined.size == whole.size
    # both are FFmpeg's decoder and resampler run once over the stream: the same samples (float32 rounding)
    np.testing.assert_allclose(joined, whole, atol=1e-6)
