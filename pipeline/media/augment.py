"""Waveform augmentation for training speech heads: speed, pitch, additive noise, reverberation, band-limiting.

    rng = augmentation_rng(seed=0, key="03-01-05-01-01-01-03", copy=0)
    noisy = add_noise(samples, snr_db=15.0, rng=rng)                  # same length, SNR exactly 15 dB
    copy = augment(samples, 16000, ("speed", "pitch", "noise"), rng)   # a random chain of the listed kinds

Every function takes mono float32 samples [N] and returns float32 samples; only `speed_perturb` changes the
length (round(N / factor)). Randomness comes only from the `rng` passed in (`augmentation_rng` derives one
from a seed, a clip key and a copy number), so a copy is the same on every run and machine.
Ranges (`AUGMENT_RANGES`) follow common SER/ASR practice: speed 0.9-1.1 (Ko et al. 2015), pitch ±2
semitones, noise 10-20 dB SNR, a synthetic room (exponentially decaying noise, RT60 0.2-0.8 s), and a
telephone channel (300-3400 Hz band-pass, 8 kHz resampling, 8-bit mu-law).
"""

from __future__ import annotations

import zlib
from fractions import Fraction
from typing import Sequence

import numpy as np
from scipy import signal

AUGMENTATIONS: tuple[str, ...] = ("speed", "pitch", "noise", "reverb", "bandlimit")
AUGMENT_RANGES = {"speed": (0.9, 1.1), "pitch": (-2.0, 2.0), "noise": (10.0, 20.0), "reverb": (0.2, 0.8)}
"""Uniform ranges: speed factor, pitch shift in semitones, noise SNR in dB, reverberation RT60 in seconds."""
APPLY_PROBABILITY = 0.5
"""Each listed kind is applied to a copy with this probability (at least one kind is always applied)."""


def parse_augmentations(text: str | None) -> tuple[str, ...]:
    """"speed,pitch,noise" -> ("speed", "pitch", "noise") in AUGMENTATIONS order; ValueError naming an unknown one."""
    if not text:
        return ()
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown[0]!r}: use a comma-separated subset of {', '.join(AUGMENTATIONS)}")
    return tuple(name for name in AUGMENTATIONS if name in names)


def augmentation_rng(seed: int, key: str, copy: int) -> np.random.Generator:
    """The generator of one augmented copy: a function of (seed, clip key, copy number) only."""
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8")), copy])


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def speed_perturb(samples: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (tempo and pitch together, as Kaldi's speed perturbation): round(N / factor) samples."""
    if factor <= 0:
        raise ValueError(f"speed factor must be > 0, got {factor}")
    ratio = Fraction(factor).limit_denominator(200)
    out = signal.resample_poly(samples.astype(np.float64), ratio.denominator, ratio.numerator)
    length = int(round(samples.size / factor))
    return np.pad(out, (0, max(0, length - out.size)))[:length].astype(np.float32)


def pitch_shift(samples: np.ndarray, sample_rate: int, semitones: float) -> np.ndarray:
    """Shift the pitch by `semitones` keeping the duration: a phase-vocoder time stretch by 2^(semitones/12)
    (torchaudio.functional.phase_vocoder, 512-point STFT) then `speed_perturb` by the same factor, at the
    input's RMS; N samples.
    (torchaudio's own pitch_shift resamples by an unreduced ratio: ~6 s per 3.5 s clip here.)"""
    import torch
    import torchaudio.functional as audio_functional

    if semitones == 0:
        return samples.astype(np.float32)
    factor = 2.0 ** (semitones / 12.0)
    n_fft, hop = 512, 128
    window = torch.hann_window(n_fft)
    spectrum = torch.stft(torch.from_numpy(samples.astype(np.float32)), n_fft, hop, window=window, return_complex=True)
    advance = torch.linspace(0, np.pi * hop, spectrum.shape[0])[:, None]
    stretched = audio_functional.phase_vocoder(spectrum, 1.0 / factor, advance)
    longer = torch.istft(stretched, n_fft, hop, window=window, length=int(round(samples.size * factor))).numpy()
    out = speed_perturb(longer, factor)
    out = np.pad(out, (0, max(0, samples.size - out.size)))[:samples.size].astype(np.float64)
    level = _rms(out)  # the vocoder's overlap-add loses level: keep the input's RMS
    return (out * (_rms(samples) / level) if level > 0 else out).astype(np.float32)


def add_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator, colour: str = "white") -> np.ndarray:
    """Add Gaussian noise ("white" or "pink") scaled so 10 log10(P_signal / P_noise) = snr_db exactly; N samples.
    A silent input is returned unchanged (no SNR is defined)."""
    power = np.mean(np.square(samples, dtype=np.float64))
    if power == 0:
        return samples.astype(np.float32)
    noise = rng.standard_normal(samples.size)
    if colour == "pink":  # 1/f power: scale the spectrum by 1/sqrt(f)
        spectrum = np.fft.rfft(noise)
        spectrum[1:] /= np.sqrt(np.arange(1, spectrum.size))
        noise = np.fft.irfft(spectrum, n=samples.size)
    elif colour != "white":
        raise ValueError(f"noise colour must be 'white' or 'pink', got {colour!r}")
    noise *= np.sqrt(power / 10 ** (snr_db / 10) / np.mean(np.square(noise)))
    return (samples + noise).astype(np.float32)


def room_impulse_response(sample_rate: int, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room: the direct path then Gaussian noise decaying 60 dB over `rt60` seconds; unit energy."""
    length = max(2, int(rt60 * sample_rate))
    times = np.arange(length) / sample_rate
    response = rng.standard_normal(length) * np.exp(-6.9078 * times / rt60)  # ln(1000) = 60 dB of amplitude
    response[0] = 1.0 + abs(response[0])
    return response / np.sqrt(np.sum(np.square(response)))


def reverberate(samples: np.ndarray, sample_rate: int, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with `room_impulse_response`, keep the first N samples and the input's RMS; N samples."""
    wet = signal.fftconvolve(samples.astype(np.float64), room_impulse_response(sample_rate, rt60, rng))[:samples.size]
    level = _rms(wet)
    return (wet * (_rms(samples) / level) if level > 0 else wet).astype(np.float32)


def band_limit(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """A telephone channel: 300-3400 Hz band-pass, 8 kHz resampling and 8-bit mu-law, back at `sample_rate`; N samples."""
    sos = signal.butter(6, [300, min(3400, 0.45 * sample_rate)], btype="bandpass", fs=sample_rate, output="sos")
    narrow = signal.resample_poly(signal.sosfiltfilt(sos, samples.astype(np.float64)), 8000, sample_rate)
    peak = max(float(np.max(np.abs(narrow))), 1e-9)
    mu = 255.0
    encoded = np.sign(narrow / peak) * np.log1p(mu * np.abs(narrow / peak)) / np.log1p(mu)
    decoded = np.sign(encoded) * np.expm1(np.abs(np.round(encoded * 127) / 127) * np.log1p(mu)) / mu * peak
    wide = signal.resample_poly(decoded, sample_rate, 8000)
    return np.pad(wide, (0, max(0, samples.size - wide.size)))[:samples.size].astype(np.float32)


def augment(samples: np.ndarray, sample_rate: int, kinds: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    """One augmented copy: each kind of `kinds` applied with APPLY_PROBABILITY (at least one), in the order
    speed, pitch, reverb, noise, bandlimit (the room before the noise floor, the channel last)."""
    kinds = parse_augmentations(",".join(kinds))
    if not kinds:
        raise ValueError("augment needs at least one augmentation kind")
    chosen = [kind for kind in kinds if rng.random() < APPLY_PROBABILITY]
    if not chosen:
        chosen = [kinds[int(rng.integers(len(kinds)))]]
    out = samples.astype(np.float32)
    for kind in ("speed", "pitch", "reverb", "noise", "bandlimit"):
        if kind not in chosen:
            continue
        if kind == "speed":
            out = speed_perturb(out, float(rng.uniform(*AUGMENT_RANGES["speed"])))
        elif kind == "pitch":
            out = pitch_shift(out, sample_rate, float(rng.uniform(*AUGMENT_RANGES["pitch"])))
        elif kind == "reverb":
            out = reverberate(out, sample_rate, float(rng.uniform(*AUGMENT_RANGES["reverb"])), rng)
        elif kind == "noise":
            out = add_noise(out, float(rng.uniform(*AUGMENT_RANGES["noise"])), rng,
                            colour="pink" if rng.random() < 0.5 else "white")
        else:
            out = band_limit(out, sample_rate)
    return out
