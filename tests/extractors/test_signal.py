"""Weights-free features: Kaldi log-mel framing, prosody pitch/energy on signals with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from affectflow.extractors.base import create_extractor

pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation

RATE = 16000


def tone(frequency: float, seconds: float, amplitude: float = 0.5, harmonics: int = 4) -> np.ndarray:
    """A voiced-like harmonic tone whose RMS is `amplitude` / sqrt(2) for harmonics=1."""
    t = np.arange(int(seconds * RATE)) / RATE
    wave = sum(np.sin(2 * np.pi * frequency * k * t) / k for k in range(1, harmonics + 1))
    return (amplitude * wave / np.abs(wave).max()).astype(np.float32)


def test_logmel_framing_matches_kaldi_and_is_deterministic(speech):
    from torchaudio.compliance import kaldi
    import torch

    extractor = create_extractor("logmel", n_mels=40)
    seq = extractor.extract(speech)
    assert seq.values.shape == (1 + (speech.size - 400) // 160, 40) and extractor.frame_rate == 100.0
    np.testing.assert_allclose(seq.times[:3], [0.0125, 0.0225, 0.0325], atol=1e-6)
    reference = kaldi.fbank(torch.from_numpy(speech)[None] * 32768, num_mel_bins=40, dither=0.0, energy_floor=1.0)
    np.testing.assert_allclose(seq.values, reference.numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(extractor.extract(speech).values, seq.values)


def test_logmel_higher_tone_moves_energy_to_higher_bands():
    extractor = create_extractor("logmel", n_mels=40)
    low, high = (extractor.extract(tone(f, 0.5, harmonics=1)).values.mean(axis=0) for f in (300.0, 3000.0))
    assert np.argmax(high) > np.argmax(low) + 5


@pytest.mark.parametrize("frequency", [120.0, 220.0])
def test_prosody_pitch_and_energy_of_a_known_tone(frequency):
    signal = np.concatenate([tone(frequency, 0.6, amplitude=0.5), np.zeros(int(0.3 * RATE), np.float32)])
    seq = create_extractor("prosody").extract(signal)
    assert seq.values.shape == (90, 3)
    np.testing.assert_allclose(seq.times[:2], [0.005, 0.015])
    log_f0, energy_db, voiced = seq.values.T
    middle = slice(10, 50)  # well inside the tone
    assert np.all(voiced[middle] == 1) and np.all(voiced[65:] == 0)
    assert abs(np.exp(np.median(log_f0[middle])) - frequency) < 0.05 * frequency
    assert np.all(log_f0[65:] == 0)
    rms_db = 10 * np.log10(np.mean(signal[: int(0.6 * RATE)] ** 2))
    assert abs(np.median(energy_db[middle]) - rms_db) < 1.0


def test_signal_features_missing_and_short_inputs():
    for name in ("logmel", "prosody"):
        extractor = create_extractor(name)
        none, silent, short = extractor.extract_batch([None, np.zeros(RATE, np.float32), tone(200.0, 0.01)])
        assert none.missing_reason == "no audio" and silent.missing_reason == "silent audio"
        assert short.num_frames == 1 and np.isfinite(short.values).all()
    with pytest.raises(ValueError, match="min_pitch_hz"):
        create_extractor("prosody", min_pitch_hz=600)
