"""Waveform augmentation (pipeline/media/augment.py): lengths, SNR, pitch ratio, channel band, levels, seeding."""

from __future__ import annotations

import numpy as np
import pytest

from affectflow.pipeline.media.augment import (
    AUGMENT_RANGES, AUGMENTATIONS, add_noise, augment, augmentation_rng, band_limit, parse_augmentations, pitch_shift,
    reverberate, speed_perturb,
)

RATE = 16000


def tone(frequency: float, seconds: float = 1.0, amplitude: float = 0.3) -> np.ndarray:
    times = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * frequency * times)).astype(np.float32)


def speech_like(seconds: float = 1.5) -> np.ndarray:
    """Harmonics of 150 Hz under a syllable-rate envelope (a voiced stand-in; no file needed)."""
    times = np.arange(int(seconds * RATE)) / RATE
    voiced = sum(np.sin(2 * np.pi * 150 * k * times) / k for k in range(1, 12))
    return (0.1 * voiced * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * times))).astype(np.float32)


def peak_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * RATE / samples.size)


def level_db(samples: np.ndarray) -> float:
    return 10 * np.log10(np.mean(np.square(samples, dtype=np.float64)) + 1e-30)


@pytest.mark.parametrize("snr_db", [10.0, 15.0, 20.0])
@pytest.mark.parametrize("colour", ["white", "pink"])
def test_add_noise_has_the_stated_snr(snr_db, colour):
    clean = speech_like()
    noisy = add_noise(clean, snr_db, np.random.default_rng(1), colour=colour)
    noise = noisy.astype(np.float64) - clean
    assert noisy.shape == clean.shape and noisy.dtype == np.float32
    # Exact up to the float32 rounding of the sum: |error| <= eps * |noisy| per sample, i.e. a relative noise-power
    # error of ~1e-6 at 20 dB SNR, so 1e-3 dB is a wide bound.
    assert level_db(clean) - level_db(noise) == pytest.approx(snr_db, abs=1e-3)
    silent = np.zeros(100, np.float32)
    np.testing.assert_array_equal(add_noise(silent, 10.0, np.random.default_rng(0)), silent)


@pytest.mark.parametrize("factor", [0.9, 0.95, 1.1])
def test_speed_perturb_length_and_pitch(factor):
    clean = tone(400.0)
    faster = speed_perturb(clean, factor)
    assert faster.size == round(clean.size / factor) and faster.dtype == np.float32
    # Tempo and pitch move together: the tone is at 400 * factor (FFT bin = RATE / N Hz).
    assert peak_frequency(faster) == pytest.approx(400 * factor, abs=2 * RATE / faster.size)
    with pytest.raises(ValueError, match="speed factor"):
        speed_perturb(clean, 0.0)


@pytest.mark.parametrize("semitones", [-2.0, 1.0, 2.0])
def test_pitch_shift_keeps_length_and_level_and_moves_the_tone(semitones):
    clean = tone(300.0, seconds=1.0)
    shifted = pitch_shift(clean, RATE, semitones)
    assert shifted.shape == clean.shape and shifted.dtype == np.float32
    # Bound: the FFT bin (1 Hz) plus the speed ratio's rational approximation (denominator <= 200: < 0.5 %).
    expected = 300.0 * 2 ** (semitones / 12)
    assert peak_frequency(shifted) == pytest.approx(expected, abs=1 + 0.005 * expected)
    assert level_db(shifted) == pytest.approx(level_db(clean), abs=1e-3)
    np.testing.assert_array_equal(pitch_shift(clean, RATE, 0.0), clean)


def test_reverberate_keeps_length_and_level():
    clean = speech_like()
    wet = reverberate(clean, RATE, 0.5, np.random.default_rng(0))
    assert wet.shape == clean.shape and level_db(wet) == pytest.approx(level_db(clean), abs=1e-3)
    assert not np.allclose(wet, clean)


def test_band_limit_is_a_telephone_band():
    for frequency, passes in ((1000.0, True), (6000.0, False), (100.0, False)):
        out = band_limit(tone(frequency), RATE)
        assert out.shape == (RATE,)
        middle = slice(2000, -2000)  # away from the filter's edge transients
        loss = level_db(tone(frequency)[middle]) - level_db(out[middle])
        # 8-bit mu-law adds noise ~38 dB below the signal; a stop-band tone is > 30 dB down.
        assert (abs(loss) < 1.0) if passes else (loss > 30), (frequency, loss)


def test_augment_is_seeded_and_bounded():
    clean = speech_like()
    first = augment(clean, RATE, AUGMENTATIONS, augmentation_rng(0, "clip-a", 0))
    again = augment(clean, RATE, AUGMENTATIONS, augmentation_rng(0, "clip-a", 0))
    np.testing.assert_array_equal(first, again)
    others = [augment(clean, RATE, AUGMENTATIONS, augmentation_rng(seed, key, copy))
              for seed, key, copy in ((1, "clip-a", 0), (0, "clip-b", 0), (0, "clip-a", 1))]
    assert all(o.shape != first.shape or not np.array_equal(o, first) for o in others)
    low, high = AUGMENT_RANGES["speed"]
    for seed in range(8):
        out = augment(clean, RATE, ("speed", "noise"), augmentation_rng(seed, "clip", 0))
        assert round(clean.size / high) <= out.size <= round(clean.size / low) and np.isfinite(out).all()
        assert augment(clean, RATE, ("noise", "reverb"), augmentation_rng(seed, "clip", 0)).size == clean.size


def test_parse_augmentations():
    assert parse_augmentations("noise, speed") == ("speed", "noise")
    assert parse_augmentations(None) == () and parse_augmentations("") == ()
    with pytest.raises(ValueError, match="'echo'"):
        parse_augmentations("noise,echo")
    with pytest.raises(ValueError, match="at least one"):
        augment(speech_like(), RATE, (), augmentation_rng(0, "x", 0))
