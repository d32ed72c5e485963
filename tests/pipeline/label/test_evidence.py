"""ClipEvidence spans: text, audio and faces of [start, end), one notion of "a frame in the span"."""

from pathlib import Path

import numpy as np
import pytest

from affectflow.pipeline.core.records import Recording
from affectflow.pipeline.label.evidence import ClipEvidence, find_media
from affectflow.pipeline.label.labeler import SpanPrediction
from affectflow.pipeline.media.decode import AudioClip
from affectflow.pipeline.media.faces import FaceTrack
from affectflow.pipeline.media.transcripts import TimedText


def _faces() -> FaceTrack:
    """Six frames at 0, 0.5, ..., 2.5 s; faces on frames 0, 1, 3, 4 (crop i filled with value i)."""
    times = np.arange(6) * 0.5
    mask = np.array([True, True, False, True, True, False])
    crops = np.stack([np.full((8, 8, 3), i, np.uint8) for i in range(mask.sum())])
    nan = np.where(mask, 1.0, np.nan).astype(np.float32)
    return FaceTrack(crops, mask, times, np.repeat(nan[:, None], 4, axis=1), nan,
                     np.repeat(np.repeat(nan[:, None, None], 5, axis=1), 2, axis=2))


def _evidence(faces: FaceTrack | None = None, audio: AudioClip | None = None,
              transcript: TimedText | None = None) -> ClipEvidence:
    recording = Recording(Path("clip.mp4"), duration=3.0, has_video=True, has_audio=audio is not None)
    return ClipEvidence(recording, audio, audio is not None, transcript, "csv" if transcript else "none", faces)


def test_faces_between_agrees_with_face_indices_between():
    evidence = _evidence(_faces())
    assert list(evidence.face_indices_between(0.0, 1.0)) == [0, 1]
    assert list(evidence.face_indices_between(1.0, None)) == [2, 3]
    window = evidence.faces_between(1.0, 2.0)  # frames at 1.0 (no face) and 1.5 (crop 2)
    assert list(window.times) == [1.0, 1.5] and list(window.mask) == [False, True]
    assert window.crops.shape[0] == 1 and window.crops[0, 0, 0, 0] == 2
    np.testing.assert_array_equal(window.crops, evidence.faces.crops[evidence.face_indices_between(1.0, 2.0)])
    assert evidence.faces_between(2.5, 3.0).is_missing
    # A frame stamped a rounding error before the window still belongs to it.
    assert list(evidence.face_indices_between(0.5 + 1e-7, 1.0)) == [1]


def test_spans_without_the_modality():
    evidence = _evidence(None)
    assert evidence.faces_between(0.0, None) is None and evidence.face_indices_between(0.0, None).size == 0
    assert evidence.audio_between(0.0, None) is None and evidence.text_between(0.0, None) is None
    assert evidence.absences() == ["no face in any sampled frame", "no transcript and no speech", "no audio stream"]


def test_audio_and_text_between():
    audio = AudioClip(np.arange(48000, dtype=np.float32), 16000)
    transcript = TimedText("hello there friend", "sidecar", ((0.0, 1.0, "hello"), (1.0, 3.0, "there friend")))
    evidence = _evidence(audio=audio, transcript=transcript)
    assert evidence.audio_between(1.0, 2.0).tolist() == list(range(16000, 32000))
    assert evidence.audio_between(3.0, None) is None  # an empty span
    assert evidence.text_between(0.0, None) == "hello there friend"
    assert evidence.text_between(1.5, 2.0) == "there friend"


def test_find_media_is_recursive_and_case_insensitive(tmp_path):
    for name in ("a.MP4", "b/c.wav", "b/d.txt", "e.mkv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in find_media(tmp_path)] == ["a.MP4", "b/c.wav", "e.mkv"]


def test_span_prediction_refuses_unknown_modalities():
    assert SpanPrediction.nothing().probs is None
    with pytest.raises(ValueError, match="audio_only"):
        SpanPrediction(np.ones(2) / 2, {"audio_only": np.ones(2) / 2})
