"""A long recording is labelled by span: its audio is streamed in 30 s windows through VAD and Whisper
(the same encoder frames as the whole track read at once) and pooled without float64 copies of it."""

import subprocess

import numpy as np
import pytest

from affectflow.pipeline.label.audio_head import POOL_CHUNK_FRAMES, mean_std_pool
from affectflow.pipeline.label.evidence import EvidenceCollector
from affectflow.pipeline.media.decode import read_audio
from factories.media import require_tool, write_speech
from factories.whisper import save_tiny_whisper_model


def test_chunked_pooling_equals_numpy():
    frames = np.random.default_rng(0).normal(3.0, 2.0, (2 * POOL_CHUNK_FRAMES + 17, 8)).astype(np.float32)
    expected = np.concatenate([frames.astype(np.float64).mean(0), frames.astype(np.float64).std(0)])
    np.testing.assert_allclose(mean_std_pool(frames), expected, rtol=1e-6)  # float64 sums, float32 result


@pytest.fixture(scope="module")
def long_speech(tmp_path_factory):
    """65 s of looped espeak-ng speech over a noise floor (FLAC: a lossy codec would cut the quiet bands
    below the clamp): three windows of 30 + 30 + 5 s."""
    folder = tmp_path_factory.mktemp("long_speech")
    wav = write_speech(folder / "speech.wav", "I am so happy to see you today, this is wonderful news.")
    path = folder / "long.flac"
    subprocess.run([require_tool("ffmpeg"), "-y", "-loglevel", "error", "-stream_loop", "-1", "-i", str(wav),
                    "-f", "lavfi", "-i", "anoisesrc=a=0.01:r=22050:seed=3", "-filter_complex",
                    "amix=inputs=2:duration=first", "-t", "65", str(path)], check=True)
    return path


def test_long_audio_is_streamed_with_the_whole_tracks_features(long_speech, tmp_path):
    folder = save_tiny_whisper_model(tmp_path / "whisper")
    collector = EvidenceCollector(face_crop_size=96, use_asr=False,
                                  audio_features={"name": "whisper", "config": {"model": str(folder)}})
    evidence = collector.collect(long_speech, "long.flac")
    assert evidence.has_voice and evidence.audio.samples.size == 0  # streamed: no samples kept
    whole = collector.audio_extractor.extract(read_audio(long_speech).samples)
    assert evidence.audio_features.values.shape == whole.values.shape
    # The noise floor keeps every mel bin within Whisper's 80 dB clamp of the loudest, where the windows and
    # the whole track agree exactly; 1e-5 as the extractor's own batching tolerance.
    np.testing.assert_allclose(evidence.audio_features.values, whole.values, atol=1e-5)


def test_long_speech_is_transcribed_window_by_window(long_speech):
    """ASR of a streamed track runs per 30 s window with speech (reusing the window's encoder output); the
    cue times are shifted to the file's timeline."""
    collector = EvidenceCollector(face_crop_size=96, audio_features={"name": "whisper", "config": {}})
    if collector.asr_problem:
        pytest.fail(collector.asr_problem)
    evidence = collector.collect(long_speech, "long.flac")
    assert evidence.transcript_source == "asr" and "happy" in evidence.transcript.text.lower()
    starts = [start for start, _, _ in evidence.transcript.cues]
    assert starts == sorted(starts) and starts[-1] >= 60.0 and max(end for _, end, _ in evidence.transcript.cues) <= 65.5
    assert evidence.transcript.text_between(31.0, 59.0)  # the middle window's cues, on the file's timeline
