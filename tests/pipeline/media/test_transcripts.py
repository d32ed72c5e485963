import numpy as np
import pytest

from affectflow.pipeline.media.transcripts import (
    TranscriptError, find_sidecar, load_transcript_table, parse_subtitles, read_transcript_file, speech_seconds,
)

SRT = """1
00:00:00,500 --> 00:00:01,800
Hello <i>there</i>

2
00:00:02,000 --> 00:00:03,250
How are you?
"""

VTT = """WEBVTT

00:00.500 --> 00:01.800
Hello there

00:02.000 --> 00:03.250 align:start
How are you?
"""


@pytest.mark.parametrize("content", [SRT, VTT])
def test_subtitles_parse_with_times(content):
    cues = parse_subtitles(content)
    assert cues == [(0.5, 1.8, "Hello there"), (2.0, 3.25, "How are you?")]


def test_timed_text_windows(tmp_path):
    path = tmp_path / "clip.srt"
    path.write_text(SRT, encoding="utf-8")
    timed = read_transcript_file(path)
    assert timed.text == "Hello there How are you?"
    assert timed.text_between(0.0, 1.0) == "Hello there"
    assert timed.text_between(1.9, 5.0) == "How are you?"
    assert timed.text_between(4.0, 5.0) == ""


def test_cp1252_sidecar_is_decoded(tmp_path):
    path = tmp_path / "clip.txt"
    path.write_bytes("I can\u2019t believe it \u2014 caf\u00e9!".encode("cp1252"))
    assert read_transcript_file(path).text == "I can\u2019t believe it \u2014 caf\u00e9!"


def test_find_sidecar_prefers_txt(tmp_path):
    media = tmp_path / "clip.mp4"
    media.write_bytes(b"x")
    assert find_sidecar(media) is None
    (tmp_path / "clip.vtt").write_text(VTT, encoding="utf-8")
    assert find_sidecar(media).suffix == ".vtt"
    (tmp_path / "clip.txt").write_text("hi", encoding="utf-8")
    assert find_sidecar(media).suffix == ".txt"


def test_transcript_table_needs_columns(tmp_path):
    good = tmp_path / "t.csv"
    good.write_text("clip,text\na/b.mp4,hello\n", encoding="utf-8")
    assert load_transcript_table(good) == {"a/b.mp4": "hello"}
    bad = tmp_path / "bad.csv"
    bad.write_text("file,words\nx,y\n", encoding="utf-8")
    with pytest.raises(TranscriptError, match="clip,text"):
        load_transcript_table(bad)
    with pytest.raises(TranscriptError, match="not found"):
        load_transcript_table(tmp_path / "absent.csv")


def test_vad_hears_speech_not_silence(media):
    from affectflow.pipeline.media.decode import read_audio

    assert speech_seconds(read_audio(media["talking_face"]).samples) > 0.5
    assert speech_seconds(read_audio(media["silent"]).samples) == 0.0
    assert speech_seconds(np.zeros(0, np.float32)) == 0.0


def test_asr_from_the_shared_encoder_pass_reads_the_same_words(media):
    from affectflow.extractors.base import create_extractor
    from affectflow.pipeline.media.decode import read_audio
    from affectflow.pipeline.media.transcripts import SpeechRecognizer

    samples = read_audio(media["talking_face"]).samples
    extractor = create_extractor("whisper")
    sequence, first_window = extractor.extract_with_first_window(samples)
    np.testing.assert_array_equal(sequence.values, extractor.extract(samples).values)  # the same frames
    assert first_window.shape == (1500, extractor.output_dim)
    recognizer = SpeechRecognizer()
    assert recognizer.whisper is extractor.whisper  # one model in this process for the frames and ASR
    alone, shared = recognizer.transcribe(samples), recognizer.transcribe(samples, first_window)
    # the 2 s clip cuts the sentence after "today": the word cut off may come out differently (padding differs)
    assert "happy to see you today" in shared.text.lower() and "happy to see you today" in alone.text.lower()
    assert shared.cues and 0.0 <= shared.cues[0][0] < shared.cues[-1][1]
    assert recognizer.transcribe(samples).text == alone.text  # the shared window was used once only
    with pytest.raises(ValueError, match="no VAD filter"):  # the filter would cut the audio the window encoded
        recognizer.whisper.recognizer.transcribe_from_encoding(samples, first_window, vad_filter=True)


def _segment(avg_logprob: float, compression_ratio: float = 1.0, no_speech_prob: float = 0.1, start: float = 0.0,
             end: float = 2.0):
    from types import SimpleNamespace

    return SimpleNamespace(avg_logprob=avg_logprob, compression_ratio=compression_ratio,
                           no_speech_prob=no_speech_prob, start=start, end=end)


def test_asr_reliability_names_each_limit():
    from affectflow.pipeline.media.transcripts import asr_reliability

    assert asr_reliability([]) is None
    assert asr_reliability([_segment(-0.4)]) is None
    assert "avg_logprob -1.20" in asr_reliability([_segment(-1.2)])
    # duration-weighted: a short unsure segment in a long sure one does not mark the text
    assert asr_reliability([_segment(-1.5, end=0.5), _segment(-0.3, start=0.5, end=6.0)]) is None
    assert "compression_ratio 2.80" in asr_reliability([_segment(-0.3, compression_ratio=2.8)])
    assert "no_speech_prob 0.90" in asr_reliability([_segment(-0.3, no_speech_prob=0.9)])


@pytest.mark.parametrize("voice, words, reliable", [
    (None, "I am so happy to see you today, this is wonderful news.", True),
    ("de", "Das Wetter war kalt und der Zug hatte heute Morgen wieder Verspätung.", False),
])
def test_tiny_en_asr_of_german_speech_is_marked_unreliable(tmp_path, voice, words, reliable):
    # measured (transcripts.py docstring): avg_logprob -0.35 for this English sentence, -1.76 for this German one
    from factories.media import write_speech

    from affectflow.pipeline.media.decode import read_audio
    from affectflow.pipeline.media.transcripts import SpeechRecognizer

    samples = read_audio(write_speech(tmp_path / "speech.wav", words, voice=voice)).samples
    recognizer = SpeechRecognizer()
    timed = recognizer.transcribe(samples)
    assert not timed.is_empty  # tiny.en writes English-looking words for German speech too
    assert timed.reliable is reliable
    assert reliable or "avg_logprob" in timed.unreliable
    # utterance rows: the speech transcribed as utterances (one here) is marked the same way
    utterances = recognizer.transcribe_spans(samples, [(0.0, samples.size / 16000)])
    assert not utterances.is_empty and utterances.reliable is reliable
    assert reliable or "avg_logprob" in utterances.unreliable


def test_join_spans_joins_only_speech_cut_by_a_window_boundary():
    from affectflow.pipeline.media.transcripts import (
        UTTERANCE_PAD_SECONDS, UTTERANCE_PAUSE_SECONDS, join_spans,
    )

    gap = UTTERANCE_PAUSE_SECONDS - 2 * UTTERANCE_PAD_SECONDS  # what one window's VAD leaves between two utterances
    first = [(1.0, 5.0), (8.0, 30.0)]
    assert join_spans(first, [(30.0, 32.0), (35.0, 36.0)]) == [(1.0, 5.0), (8.0, 32.0), (35.0, 36.0)]
    assert join_spans(first, [(30.0 + gap * 0.9, 32.0)]) == [(1.0, 5.0), (8.0, 32.0)]  # a shorter pause
    assert join_spans(first, [(30.0 + gap, 32.0)]) == first + [(30.0 + gap, 32.0)]  # a pause: two utterances
    assert join_spans([], [(30.0, 31.0)]) == [(30.0, 31.0)] and join_spans(first, []) == first
    assert join_spans([(1.0, 30.0)], [(30.0, 31.5)]) == [(1.0, 30.0), (30.0, 31.5)]  # longer than 30 s: cut


def test_asr_from_a_clip_window_encoding_reads_what_the_30s_window_reads(tmp_path):
    """window="clip" (the default labeller's): the one encoder pass of a 5 s clip, a 15 s window, is what ASR
    decodes from (faster-whisper encodes nothing more), and its words are those decoded from the 30 s window."""
    from affectflow.extractors.base import create_extractor
    from affectflow.extractors.whisper import clip_window_frames
    from affectflow.pipeline.media.decode import read_audio
    from affectflow.pipeline.media.transcripts import SpeechRecognizer
    from factories.media import write_speech

    samples = read_audio(write_speech(tmp_path / "happy.wav", seconds=5.0)).samples
    clip, full = create_extractor("whisper", window="clip"), create_extractor("whisper")
    sequence, encoding = clip.extract_with_first_window(samples)
    assert encoding.shape == (clip_window_frames(samples.size) // 2, clip.output_dim) == (750, 384)
    np.testing.assert_array_equal(encoding, clip._encode([clip.windows(samples)[0][0]])[0])  # the clip's window
    recognizer = SpeechRecognizer()
    assert recognizer.whisper is clip.whisper
    model, encodes = recognizer.whisper.recognizer, []
    original = model.encode
    model.encode = lambda features: encodes.append(features.shape) or original(features)
    try:
        shared = recognizer.transcribe(samples, encoding)
    finally:
        del model.encode
    assert encodes == []  # decoded from the given encoding only
    thirty = recognizer.transcribe(samples, full.extract_with_first_window(samples)[1])
    assert shared.text == thirty.text and "happy to see you today" in shared.text.lower()
    assert shared.cues and shared.cues[-1][1] <= samples.size / 16000 + 0.02
