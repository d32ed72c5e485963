"""Sound without speech is not voice evidence: a tone or a clip too short for the speech head keeps
has_audio but gives no audio probabilities, and the row's `audio_note` says why."""

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from affectflow.pipeline.label.default_model import CLASSES
from affectflow.pipeline.label.evidence import MIN_SPEECH_SECONDS, EvidenceCollector, voice_note
from affectflow.pipeline.label.run import LabelingOptions, run_labeling
from factories.media import make_video, require_tool


def test_voice_note_rule():
    assert "shorter than" in voice_note(0.023, 0.0)
    assert "no speech" in voice_note(5.0, MIN_SPEECH_SECONDS / 2)
    assert voice_note(5.0, MIN_SPEECH_SECONDS) is None


@pytest.fixture(scope="module")
def no_voice_clips(tmp_path_factory, media):
    folder = tmp_path_factory.mktemp("no_voice")
    subprocess.run([require_tool("ffmpeg"), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=16000:duration=0.2", str(folder / "tone.wav")], check=True)
    make_video(folder / "one_frame.mp4", seconds=0.04)  # one frame of a face, a few ms of audio
    shutil.copy(media["talking_face"], folder / "talking_face.mp4")
    (folder / "talking_face.txt").write_text("I am so happy to see you today.", encoding="utf-8")
    return folder


def test_collector_notes_audio_without_speech(no_voice_clips):
    collector = EvidenceCollector(face_crop_size=96, use_asr=False)
    tone = collector.collect(no_voice_clips / "tone.wav", "tone.wav")
    assert tone.has_audio and not tone.has_voice and "no speech" in tone.audio_note
    assert tone.audio_between(0.0, None) is None
    short = collector.collect(no_voice_clips / "one_frame.mp4", "one_frame.mp4")
    assert short.recording.has_audio and not short.has_voice and "shorter than" in (short.audio_note or "")
    talking = collector.collect(no_voice_clips / "talking_face.mp4", "talking_face.mp4")
    assert talking.has_voice and talking.audio_note is None


def test_no_audio_probabilities_without_speech(no_voice_clips, tmp_path):
    from affectflow.pipeline.label.default_model import DefaultLabeler

    out = tmp_path / "labels.jsonl"
    run_labeling(no_voice_clips, out, DefaultLabeler("cpu"), LabelingOptions(use_asr=False), "jsonl", progress=False)
    rows = pd.read_json(out, lines=True).set_index("clip")
    audio_columns = [f"prob_audio_{c}" for c in CLASSES]
    tone, short, talking = rows.loc["tone.wav"], rows.loc["one_frame.mp4"], rows.loc["talking_face.mp4"]
    assert tone["has_audio"] and tone[audio_columns].isna().all() and "no speech" in tone["audio_note"]
    assert pd.isna(tone["label"]) and "no speech" in tone["error"]  # nothing else to label it from
    assert short[audio_columns].isna().all() and "shorter than" in short["audio_note"]
    assert short["has_vision"] and short["label"] in CLASSES  # the face alone decides
    np.testing.assert_allclose(talking[audio_columns].sum(), 1.0, atol=1e-4)
    assert talking["audio_note"] in ("", None) or pd.isna(talking["audio_note"])
