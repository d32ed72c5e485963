"""What evidence a labeller needs, as a value; the run's evidence collectors and early workers built from it.

A labeller declares its needs (`EvidenceNeeds`): face crops of which size, Whisper-like audio frames from
which extractor, a transcript, utterances. The default model declares them on its class, so the evidence
workers can start before it loads (`start_early_pool`); a trained bundle's labeller on the instance (its
crop size comes from its vision extractor). A run completes them with its options (`EvidenceNeeds.for_run`:
face sampling rate and scale, ASR on or off, rows per utterance) into an `EvidencePlan`, which builds the
collectors (in this process or in each worker). Early workers are used when their plan equals the loaded
labeller's (dataclass equality), else they are stopped and a pool is built from the labeller's plan:

    needs = DefaultLabeler.evidence_needs
    # EvidenceNeeds(faces=FaceCrops(size=96, fps=2.0, min_face_fraction=...),
    #               audio_frames=AudioFrames(extractor="whisper", config=()), transcript=True, utterances=False)
    plan = collector_factory(options, labeler)      # EvidencePlan: needs.for_run(options), device, transcripts
    collector = plan()                              # an EvidenceCollector (what each worker builds once)

A labeller without `evidence_needs` is read from its `face_crop_size` and optional `evidence_audio_features`
({"name", "config"}), with a transcript.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from affectflow.pipeline.core.devices import threads_per_worker
from affectflow.pipeline.label.evidence import EvidenceCollector
from affectflow.pipeline.label.pending import find_media
from affectflow.pipeline.label.workers import StartedPool, start_pool
from affectflow.pipeline.media.faces import MIN_FACE_FRACTION

if TYPE_CHECKING:
    from affectflow.pipeline.label.run import LabelingOptions


@dataclass(frozen=True)
class FaceCrops:
    """Face crops of `size` x `size` pixels from frames sampled at `fps`, faces searched down to
    `min_face_fraction` of the frame's shorter side (None: 20 px on full-resolution frames)."""

    size: int
    fps: float = 2.0
    min_face_fraction: float | None = MIN_FACE_FRACTION


@dataclass(frozen=True)
class AudioFrames:
    """Frames of every usable audio track from the registered extractor `extractor` with `config` (sorted
    (key, value) pairs, so the value hashes and compares); `spec` is the {"name", "config"} form."""

    extractor: str
    config: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> "AudioFrames":
        """From an extractor spec {"name": ..., "config": {...}}."""
        return cls(str(spec["name"]), tuple(sorted(dict(spec.get("config") or {}).items())))

    @property
    def spec(self) -> dict[str, Any]:
        return {"name": self.extractor, "config": dict(self.config)}


@dataclass(frozen=True)
class EvidenceNeeds:
    """The evidence of a clip a labeller uses: face crops (None: no face detection), audio frames from an
    extractor (None: the labeller encodes the samples itself), a transcript (sidecar, table, else ASR;
    False: none is made by ASR), utterances (the speech cut at its pauses, each with its own ASR words)."""

    faces: FaceCrops | None = None
    audio_frames: AudioFrames | None = None
    transcript: bool = True
    utterances: bool = False

    def for_run(self, *, face_fps: float, min_face_fraction: float | None, use_asr: bool = True,
                share_audio_encoder: bool = True, utterances: bool = False) -> "EvidenceNeeds":
        """These needs as a run collects them: its face sampling rate and scale, ASR only when the run allows
        it, audio frames only when the run shares the encoder with the collector, utterances when it asks."""
        faces = None if self.faces is None else dataclasses.replace(self.faces, fps=face_fps,
                                                                    min_face_fraction=min_face_fraction)
        return EvidenceNeeds(faces, self.audio_frames if share_audio_encoder else None,
                             self.transcript and use_asr, self.utterances or utterances)


def declared_needs(labeler: Any) -> EvidenceNeeds | None:
    """What a labeller (or a labeller class) needs: its `evidence_needs`, else what its `face_crop_size` and
    `evidence_audio_features` say; None when it cannot say (a class whose instances decide: a property)."""
    if hasattr(labeler, "evidence_needs"):
        needs = labeler.evidence_needs
        return needs if isinstance(needs, EvidenceNeeds) else None
    size = getattr(labeler, "face_crop_size", None)
    if not isinstance(size, int):
        return None
    audio = getattr(labeler, "evidence_audio_features", None)
    return EvidenceNeeds(FaceCrops(size), AudioFrames.of(audio) if audio is not None else None)


@dataclass(frozen=True)
class EvidencePlan:
    """A run's evidence collector as a value (picklable; what each worker process calls once): the needs
    completed by the run's options, the device ("cpu", "cuda[:N]") and the transcripts table (clip -> text).
    Two plans are equal when they build the same collector."""

    needs: EvidenceNeeds
    device: str = "cpu"
    transcripts: Mapping[str, str] | None = None

    def __call__(self) -> EvidenceCollector:
        """A new EvidenceCollector of this plan (loads the face detector, the audio extractor and ASR)."""
        needs = self.needs
        faces = needs.faces
        return EvidenceCollector(
            face_crop_size=faces.size if faces is not None else None, face_fps=faces.fps if faces else 2.0,
            min_face_fraction=faces.min_face_fraction if faces is not None else MIN_FACE_FRACTION,
            transcripts=dict(self.transcripts) if self.transcripts else None, use_asr=needs.transcript,
            device=self.device, audio_features=needs.audio_frames.spec if needs.audio_frames is not None else None,
            utterances=needs.utterances)


def plan_for(needs: EvidenceNeeds, options: "LabelingOptions") -> EvidencePlan:
    """The EvidencePlan of a labeller's needs in a run with these options."""
    return EvidencePlan(needs.for_run(face_fps=options.face_fps, min_face_fraction=options.min_face_fraction,
                                      use_asr=options.use_asr, share_audio_encoder=options.share_audio_encoder,
                                      utterances=options.segment_by == "utterance"),
                        str(options.device), options.transcripts)


def collector_factory(options: "LabelingOptions", labeler: Any) -> EvidencePlan:
    """The EvidencePlan of a run with this labeller; ValueError when it declares no needs."""
    needs = declared_needs(labeler)
    if needs is None:
        raise ValueError(f"{type(labeler).__name__} declares no evidence needs (evidence_needs or face_crop_size)")
    return plan_for(needs, options)


def make_collector(options: "LabelingOptions", labeler: Any) -> EvidenceCollector:
    """The EvidenceCollector of a run (see `collector_factory`)."""
    return collector_factory(options, labeler)()


def start_early_pool(videos: str | Path, options: "LabelingOptions", labeler_class: Any,
                     workers: int) -> StartedPool | None:
    """`workers` evidence processes started before the labeller loads, when its needs are known from its
    class alone (a class-level `evidence_needs`, as the default model's): they build their face detectors,
    Whisper and ASR while this process loads the models, then collect the folder's first clips (two per
    worker; a clip an earlier run finished is collected in vain). None when `workers` is 0 or the class
    cannot say (a factory without `evidence_needs`, or needs that only an instance knows); a factory object
    whose `evidence_needs` is an EvidenceNeeds (default_model.DefaultLabelerFactory) says."""
    declares = isinstance(labeler_class, type) or isinstance(getattr(labeler_class, "evidence_needs", None),
                                                             EvidenceNeeds)
    needs = declared_needs(labeler_class) if declares else None
    if needs is None or workers <= 0:
        return None
    videos = Path(videos)
    ahead = [(path, path.relative_to(videos).as_posix()) for path in find_media(videos)[:2 * workers]]
    return start_pool(plan_for(needs, options), workers, threads_per_worker(workers), ahead)
