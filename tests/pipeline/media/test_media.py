import numpy as np
import pytest

from affectflow.pipeline.core.errors import MediaError
from affectflow.pipeline.media.decode import SILENCE_RMS, iter_frame_chunks, probe, read_audio, read_frames


def test_probe_talking_face(media):
    recording = probe(media["talking_face"])
    assert recording.has_video and recording.has_audio
    assert recording.fps == pytest.approx(25.0)
    assert (recording.width, recording.height) == (320, 240)
    assert recording.duration == pytest.approx(2.0, abs=0.1)


def test_probe_audio_only_and_no_audio(media):
    wav = probe(media["speech_wav"])
    assert wav.has_audio and not wav.has_video
    silent_video = probe(media["no_audio"])
    assert silent_video.has_video and not silent_video.has_audio


@pytest.mark.parametrize("name, cause", [
    ("zero_bytes", "empty"), ("truncated", "not a readable"), ("not_media", "not a readable"),
])
def test_bad_files_raise_media_error_naming_file(media, name, cause):
    with pytest.raises(MediaError, match=cause) as info:
        probe(media[name])
    assert str(media[name]) in str(info.value)
    with pytest.raises(MediaError):
        read_audio(media[name])
    with pytest.raises(MediaError):
        read_frames(media[name])


def test_missing_file(tmp_path):
    with pytest.raises(MediaError, match="file not found"):
        probe(tmp_path / "absent.mp4")


def test_audio_segment_is_16k_mono_float(media):
    clip = read_audio(media["talking_face"], start=0.5, end=1.5)
    assert clip.sample_rate == 16000 and clip.samples.dtype == np.float32 and clip.samples.ndim == 1
    assert len(clip.samples) == pytest.approx(16000, abs=160)
    assert not clip.is_missing and not clip.silent
    assert np.abs(clip.samples).max() <= 1.0


def test_audio_resampled_from_wav(media):
    clip = read_audio(media["speech_wav"])  # espeak writes 22.05 kHz
    assert clip.sample_rate == 16000 and len(clip.samples) == pytest.approx(32000, abs=400)


def test_no_audio_stream_is_missing_not_a_crash(media):
    clip = read_audio(media["no_audio"])
    assert clip.is_missing and "no audio stream" in clip.missing_reason and len(clip.samples) == 0


def test_silent_track_flagged(media):
    clip = read_audio(media["silent"])
    assert clip.silent and not clip.is_missing
    assert float(np.sqrt(np.mean(clip.samples ** 2))) < SILENCE_RMS


def test_frames_at_requested_fps_with_times(media):
    frames = read_frames(media["talking_face"], start=0.5, end=1.5, fps=5)
    assert frames.frames.dtype == np.uint8 and frames.frames.shape[1:] == (240, 320, 3)
    assert len(frames) == 5
    assert np.all(np.diff(frames.times) > 0)
    assert 0.45 <= frames.times[0] < 0.7 and frames.times[-1] < 1.5
    native = read_frames(media["talking_face"], start=0.0, end=1.0)
    assert len(native) == 25


def test_chunks_are_bounded_and_cover_segment(media):
    chunks = list(iter_frame_chunks(media["talking_face"], budget_bytes=7 * 240 * 320 * 3))
    assert all(len(c) <= 7 for c in chunks)
    assert sum(len(c) for c in chunks) == 50


def test_bad_spans(media):
    with pytest.raises(MediaError, match="beyond the video"):
        read_frames(media["talking_face"], start=30.0)
    with pytest.raises(MediaError, match="invalid segment span"):
        read_audio(media["talking_face"], start=2.0, end=1.0)
    with pytest.raises(MediaError, match="audio only"):
        read_frames(media["speech_wav"])
