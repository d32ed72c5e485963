"""Weights-free audio features: no model, no download, deterministic and cheap.

  "logmel":  Kaldi-compatible log mel filterbank energies (torchaudio.compliance.kaldi.fbank):
             [T, n_mels] at 100 Hz (25 ms windows, 10 ms hop), times = window centres.
  "prosody": pitch and energy per 10 ms frame: [T, 3] = (ln F0 in Hz, 0 when unvoiced;
             RMS energy in dBFS over a 25 ms window; voiced flag 0/1). F0 comes from
             torchaudio.functional.detect_pitch_frequency (normalised cross-correlation + median
             smoothing); a frame counts as voiced when its energy is within `voicing_db` of the
             clip's loudest frame and above `floor_db`.
Missing, empty or silent audio gives a missing sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from affectflow.pipeline.core.records import FeatureSequence

from affectflow.extractors.base import Extractor, ExtractorConfig, InputContract, register_extractor
from affectflow.extractors.hf_common import missing_audio


@dataclass(frozen=True)
class LogMelConfig(ExtractorConfig):
    """n_mels filters, frame_length_ms window, frame_shift_ms hop, sample_rate (Hz) expected."""

    n_mels: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        if self.n_mels < 1 or self.frame_length_ms <= 0 or self.frame_shift_ms <= 0:
            raise ValueError(f"logmel: n_mels, frame_length_ms and frame_shift_ms must be > 0, got {self}")


class _SignalExtractor(Extractor):
    """Shared plumbing: per-item missing handling and the audio contract."""

    modality = "a"

    @property
    def contract(self) -> InputContract:
        """Mono float32 samples at the config's sample rate."""
        return InputContract(modality="a", sample_rate=self.config.sample_rate)

    @property
    def frame_rate(self) -> float:
        """Output frames per second."""
        return 1000.0 / self.config.frame_shift_ms

    def _window_and_hop(self) -> tuple[int, int]:
        """(window, hop) in samples of the config's frame_length_ms / frame_shift_ms at its sample rate."""
        config = self.config
        return (int(round(config.frame_length_ms * config.sample_rate / 1000)),
                int(round(config.frame_shift_ms * config.sample_rate / 1000)))

    def extract_batch(self, items: list[np.ndarray | None]) -> list[FeatureSequence]:
        """One [T, D] sequence per 1-D float32 clip; None/empty/silent -> missing."""
        results = []
        for item in items:
            missing = missing_audio(self, item)
            if missing is not None:
                results.append(missing)
                continue
            values, times = self._features(torch.from_numpy(np.ascontiguousarray(item)))
            results.append(FeatureSequence(values=values.astype(np.float32), times=times.astype(np.float32),
                                           mask=np.ones(len(times), dtype=bool), extractor_id=self.extractor_id))
        return results

    def _features(self, samples: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


@register_extractor("logmel")
class LogMelExtractor(_SignalExtractor):
    """Log mel filterbank energies [T, n_mels] at 1000 / frame_shift_ms Hz."""

    config_class = LogMelConfig

    @property
    def output_dim(self) -> int:
        """Number of mel bands."""
        return int(self.config.n_mels)

    def _features(self, samples: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        from torchaudio.compliance import kaldi

        config = self.config
        window, hop = self._window_and_hop()
        if samples.numel() < window:  # shorter than one window: pad to one frame
            samples = torch.nn.functional.pad(samples, (0, window - samples.numel()))
        # Kaldi works on 16-bit sample values; dither=0 keeps the features deterministic.
        values = kaldi.fbank(samples[None] * 32768.0, num_mel_bins=config.n_mels,
                             frame_length=config.frame_length_ms, frame_shift=config.frame_shift_ms,
                             sample_frequency=config.sample_rate, dither=0.0, energy_floor=1.0)
        times = (np.arange(values.shape[0]) * hop + window / 2) / config.sample_rate
        return values.numpy(), times


@dataclass(frozen=True)
class ProsodyConfig(ExtractorConfig):
    """Pitch search range (Hz), median smoothing (frames), voicing thresholds (dB)."""

    min_pitch_hz: int = 60
    max_pitch_hz: int = 500
    smoothing_frames: int = 5
    voicing_db: float = 30.0
    floor_db: float = -55.0
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        if not 0 < self.min_pitch_hz < self.max_pitch_hz < self.sample_rate / 2:
            raise ValueError(f"prosody: need 0 < min_pitch_hz < max_pitch_hz < sample_rate/2, got {self}")


@register_extractor("prosody")
class ProsodyExtractor(_SignalExtractor):
    """Pitch + energy [T, 3] = (ln F0 or 0, RMS dBFS, voiced) at 1000 / frame_shift_ms Hz."""

    config_class = ProsodyConfig

    @property
    def output_dim(self) -> int:
        """3: ln F0, energy dB, voiced."""
        return 3

    def _features(self, samples: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        import torchaudio.functional as audio_functional

        config = self.config
        window, hop = self._window_and_hop()
        count = max(1, int(np.ceil(samples.numel() / hop)))
        # detect_pitch_frequency frames are consecutive hop-long blocks: frame i covers [i*hop, (i+1)*hop).
        # Its median smoothing needs at least `smoothing_frames` frames: zero-pad very short clips.
        pitch_input = torch.nn.functional.pad(samples, (0, max(0, config.smoothing_frames * hop - samples.numel())))
        pitch = audio_functional.detect_pitch_frequency(
            pitch_input[None], config.sample_rate, frame_time=config.frame_shift_ms / 1000,
            win_length=config.smoothing_frames, freq_low=config.min_pitch_hz, freq_high=config.max_pitch_hz,
        )[0].numpy()
        # Its median smoothing drops the last (smoothing_frames - 1) // 2 frames: repeat the last value.
        pitch = np.pad(pitch[:count], (0, max(0, count - pitch.shape[0])), mode="edge")
        centres = np.arange(count) * hop + hop / 2
        padded = np.pad(samples.numpy(), (window // 2, window // 2 + hop))
        starts = np.clip(centres.astype(int), 0, padded.size - window)
        frames = np.stack([padded[start:start + window] for start in starts])
        energy_db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-10)
        voiced = (energy_db > energy_db.max() - config.voicing_db) & (energy_db > config.floor_db)
        log_pitch = np.where(voiced, np.log(np.clip(pitch, config.min_pitch_hz, config.max_pitch_hz)), 0.0)
        values = np.stack([log_pitch, energy_db, voiced.astype(np.float64)], axis=1)
        return values, centres / config.sample_rate
