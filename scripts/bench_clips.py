"""The realistic clip set of `bench_label.py`: what users label, generated once into a cache folder.

    specs = plan_clip_set(total_seconds=300, seed=0, ravdess=Path("../shared/data/ravdess-speech"))
    make_clip_set(folder, specs)                    # reuses every clip already there
    batch = draw_batch(specs, 60, seed=0)           # a 1-minute batch: one clip of each kind, then filled
    link_batch(folder, batch, folder / "batch-60s")

Clips of 2-25 s (log-uniform: more short clips than long ones), 640x360 or 1280x720 at 25 or 30 fps,
H.264 (x264 veryfast: B-frames and CABAC, as cameras and phones write) with 48 kHz AAC. The face is the
real photo of `tests/factories/media.py`, at 30-70% of the frame height, drifting over a textured
background. Kinds:

- `ravdess`: real voices: RAVDESS utterances (16 kHz FLAC, several actors: several speakers) joined
  with pauses of 0.3-1.5 s until the clip's length;
- `espeak`: English sentences, each in one of several espeak-ng voices (several speakers), with pauses;
- `face-leaves`: the face slides out of the frame at half the clip: no face for its second half;
- `no-speech`: a music-like chord melody, silence and noise, never speech;
- `sidecar`: espeak-ng speech with its transcript in `clip.txt` beside it (no ASR needed).

Every clip carries faint room noise. Without the RAVDESS folder the `ravdess` clips use espeak-ng voices
(say so: `plan_clip_set` returns `ravdess_used=False` on every spec).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
SIZES = ((640, 360), (1280, 720))
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-us+f3", "en-gb+f4", "en-029")
SENTENCES = ("I am so happy to see you today, this is wonderful news.",
             "I can't believe you did that again, I am really angry with you.",
             "Well, I suppose we could try it tomorrow, if you really want to.",
             "Oh no, that is terrible, I am so sorry to hear about your loss.",
             "The meeting starts at nine, so please bring the report with you.",
             "Wait, what? You are moving to another country next month?",
             "Honestly, I do not care what they think about it any more.",
             "That smell is disgusting, who left the milk out all week?")
SPECIAL_KINDS = ("face-leaves", "no-speech", "sidecar", "ravdess", "espeak")


@dataclass(frozen=True)
class ClipSpec:
    """One clip of the set: its file name, length (s), frame size, frame rate, kind and content.

    speech: the spoken pieces in order, each ("espeak", voice, sentence) or ("ravdess", flac path, "").
    """

    name: str
    seconds: float
    size: tuple[int, int]
    fps: int
    kind: str
    speech: tuple[tuple[str, str, str], ...] = ()
    face_scale: float = 0.55
    seed: int = 0
    ravdess_used: bool = False



def ravdess_files(root: Path | None) -> list[Path]:
    """RAVDESS utterances under `root` (Actor_NN/*.flac), sorted; [] when the folder is absent."""
    if root is None or not Path(root).is_dir():
        return []
    return sorted(Path(root).glob("Actor_*/*.flac"))


def plan_clip_set(total_seconds: float = 300.0, seed: int = 0, ravdess: Path | None = None,
                  min_seconds: float = 2.0, max_seconds: float = 25.0, sizes=SIZES) -> list[ClipSpec]:
    """Specs of clips until their lengths reach `total_seconds`: first one of each kind (SPECIAL_KINDS, at
    most (min + max) / 2 s long, so that a 1-minute batch holds them and more), then ravdess 45%, espeak
    35%, face-leaves 20%. Lengths log-uniform in [min, max] s (seeded)."""
    rng = np.random.default_rng(seed)
    utterances = ravdess_files(ravdess)
    specs: list[ClipSpec] = []
    total = 0.0
    while total < total_seconds:
        index = len(specs)
        kind = SPECIAL_KINDS[index] if index < len(SPECIAL_KINDS) else \
            str(rng.choice(["ravdess", "espeak", "face-leaves"], p=[0.45, 0.35, 0.20]))
        longest = max_seconds if index >= len(SPECIAL_KINDS) else (min_seconds + max_seconds) / 2
        seconds = round(float(math.exp(rng.uniform(math.log(min_seconds), math.log(longest)))), 1)
        size = tuple(sizes[int(rng.integers(len(sizes)))])
        fps = int(rng.choice([25, 30]))
        real = bool(utterances) and kind in ("ravdess", "face-leaves")
        pieces = _plan_speech(rng, seconds, utterances if real else [], kind)
        specs.append(ClipSpec(name=f"{index:02d}-{kind}-{seconds:g}s-{size[0]}x{size[1]}", seconds=seconds,
                              size=size, fps=fps, kind=kind, speech=pieces, face_scale=float(rng.uniform(0.3, 0.7)),
                              seed=int(rng.integers(1 << 30)), ravdess_used=real))
        total += seconds
    return specs


def _plan_speech(rng: np.random.Generator, seconds: float, utterances: list[Path],
                 kind: str) -> tuple[tuple[str, str, str], ...]:
    """Enough spoken pieces for `seconds` (about 3 s each with their pause); none for no-speech."""
    if kind == "no-speech":
        return ()
    count = max(1, int(round(seconds / 3.5)))
    if utterances:
        return tuple(("ravdess", str(utterances[int(rng.integers(len(utterances)))]), "") for _ in range(count))
    single_voice = kind == "sidecar" and rng.random() < 0.5
    first = str(rng.choice(VOICES))
    return tuple(("espeak", first if single_voice else str(rng.choice(VOICES)),
                  SENTENCES[int(rng.integers(len(SENTENCES)))]) for _ in range(count))


def _ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    if found is None:
        raise RuntimeError("ffmpeg is not on PATH; install it with `apt-get install ffmpeg`")
    return found


def read_audio(path: Path) -> np.ndarray:
    """Any audio file as float32 mono at SAMPLE_RATE (ffmpeg)."""
    done = subprocess.run([_ffmpeg(), "-loglevel", "error", "-i", str(path), "-f", "s16le", "-ac", "1",
                           "-ar", str(SAMPLE_RATE), "-"], capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"{path}: ffmpeg could not decode it: {done.stderr.decode(errors='replace')[-500:]}")
    return np.frombuffer(done.stdout, np.int16).astype(np.float32) / 32768.0


def _spoken(piece: tuple[str, str, str], scratch: Path) -> np.ndarray:
    """One piece's samples, espeak's own leading and trailing quiet cut."""
    from factories.media import write_speech

    source, where, text = piece
    if source == "ravdess":
        samples = read_audio(Path(where))
    else:
        samples = read_audio(write_speech(scratch / "piece.wav", text, voice=where))
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    return samples[loud[0]:loud[-1] + 1] if loud.size else samples


def speech_track(spec: ClipSpec, scratch: Path) -> tuple[np.ndarray, int]:
    """The clip's audio [seconds * SAMPLE_RATE] and how many of its pieces it holds (the last may be cut):
    the pieces with pauses of 0.3-1.5 s, or for no-speech a chord melody, silence and noise; faint room
    noise throughout."""
    rng = np.random.default_rng(spec.seed)
    length = int(round(spec.seconds * SAMPLE_RATE))
    track = np.zeros(length, np.float32)
    used = 0
    if spec.kind == "no-speech":
        track[:] = _no_speech(rng, length)
    else:
        position = int(rng.uniform(0.1, 0.8) * SAMPLE_RATE)
        for piece in spec.speech:
            if position >= length:
                break
            used += 1
            samples = _spoken(piece, scratch)[: length - position]
            track[position:position + len(samples)] = samples * (0.5 / max(float(np.abs(samples).max()), 1e-3))
            position += len(samples) + int(rng.uniform(0.3, 1.5) * SAMPLE_RATE)
    return track + rng.normal(0.0, 0.002, length).astype(np.float32), used


def _no_speech(rng: np.random.Generator, length: int) -> np.ndarray:
    """40% chord melody (notes of 0.5 s with harmonics), 30% silence, 30% brown noise."""
    time = np.arange(length) / SAMPLE_RATE
    melody = np.zeros(length, np.float32)
    note = int(0.5 * SAMPLE_RATE)
    for start in range(0, int(0.4 * length), note):
        root = 220.0 * 2 ** (int(rng.integers(0, 12)) / 12)
        span = slice(start, min(start + note, int(0.4 * length)))
        envelope = np.exp(-3.0 * (time[span] - time[start]))
        for ratio in (1.0, 1.26, 1.5):  # a major chord, each tone with two harmonics
            for harmonic, weight in ((1, 0.3), (2, 0.1), (3, 0.05)):
                melody[span] += weight * envelope * np.sin(2 * np.pi * root * ratio * harmonic * time[span])
    noise = np.cumsum(rng.normal(0.0, 1.0, length)).astype(np.float32)
    noise -= np.convolve(noise, np.ones(801) / 801, mode="same")  # brown noise without its drift
    noise *= 0.2 / max(float(np.abs(noise).max()), 1e-6)
    out = melody
    out[int(0.7 * length):] = noise[int(0.7 * length):]
    return out


def face_frames(spec: ClipSpec):
    """RGB uint8 frames [H, W, 3] of the clip: the face drifting over a textured background; for
    face-leaves it slides out to the right over 0.5 s before half the clip and stays out."""
    import cv2
    from factories.media import face_image

    width, height = spec.size
    count = int(round(spec.seconds * spec.fps))
    rng = np.random.default_rng(spec.seed)
    blotches = rng.integers(60, 150, (height // 45 + 2, width // 45 + 2, 1)) + rng.integers(-25, 25, 3)
    texture = cv2.resize(np.clip(blotches, 0, 255).astype(np.uint8), (width + 16, height + 16),
                         interpolation=cv2.INTER_CUBIC)  # a blurred, tinted room
    face = face_image()
    scale = spec.face_scale * height / face.shape[0]
    face = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    leave_from = spec.seconds / 2 - 0.5 if spec.kind == "face-leaves" else math.inf
    for index in range(count):
        seconds = index / spec.fps
        shift = int(8 + 7 * math.sin(seconds))
        canvas = np.ascontiguousarray(texture[shift:shift + height, shift:shift + width])
        x = int((width - face.shape[1]) * (0.5 + 0.2 * math.sin(0.7 * seconds)))
        y = int((height - face.shape[0]) * (0.5 + 0.1 * math.sin(1.1 * seconds)))
        if seconds >= leave_from:
            x += int((seconds - leave_from) / 0.5 * width)
        if x < width:
            visible = min(face.shape[1], width - x)
            canvas[y:y + face.shape[0], x:x + visible] = face[:, :visible]
        yield canvas


def make_clip(spec: ClipSpec, folder: Path) -> Path:
    """Write `folder/<name>.mp4` (and `<name>.txt` for a sidecar clip); reuse it when present. Written
    under a temporary name first, so an interrupted run leaves no half clip."""
    path = folder / f"{spec.name}.mp4"
    if path.is_file():
        return path
    scratch = folder / f".{spec.name}.scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        wav = scratch / "audio.wav"
        with wave.open(str(wav), "wb") as handle:
            handle.setnchannels(1)
            handle.setsampwidth(2)
            handle.setframerate(SAMPLE_RATE)
            track, used = speech_track(spec, scratch)
            handle.writeframes(np.clip(np.round(track * 32767), -32768, 32767).astype(np.int16).tobytes())
        if spec.kind == "sidecar":  # what is spoken, the cut last sentence included
            path.with_suffix(".txt").write_text(" ".join(piece[2] for piece in spec.speech[:used]) + "\n",
                                                encoding="utf-8")
        partial = scratch / "clip.mp4"
        width, height = spec.size
        command = [_ffmpeg(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
                   "-s", f"{width}x{height}", "-r", str(spec.fps), "-i", "-", "-i", str(wav),
                   "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
                   "-c:a", "aac", "-b:a", "96k", "-ar", "48000", "-t", f"{spec.seconds}", str(partial)]
        encoder = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            for frame in face_frames(spec):
                encoder.stdin.write(frame.tobytes())
        except BrokenPipeError:
            pass
        encoder.stdin.close()
        error = encoder.stderr.read().decode(errors="replace")
        if encoder.wait() != 0:
            raise RuntimeError(f"{path}: ffmpeg failed: {error[-1000:]}")
        partial.replace(path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return path


def make_clip_set(folder: Path, specs: list[ClipSpec]) -> list[Path]:
    """Every spec's clip in `folder` (generated once, then reused)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [make_clip(spec, folder) for spec in specs]


def draw_batch(specs: list[ClipSpec], seconds: float, seed: int = 0) -> list[ClipSpec]:
    """Clips of about `seconds` in all, drawn in a seeded order: first one of each kind that still fits,
    then any that fit, until the total is within 5% of `seconds` (or nothing fits)."""
    order = [specs[i] for i in np.random.default_rng(seed).permutation(len(specs))]
    chosen: list[ClipSpec] = []
    total = 0.0
    for kind in SPECIAL_KINDS:
        for spec in order:
            if spec.kind == kind and spec not in chosen and total + spec.seconds <= seconds * 1.05:
                chosen.append(spec)
                total += spec.seconds
                break
    for spec in order:
        if total >= seconds * 0.95:
            break
        if spec not in chosen and total + spec.seconds <= seconds * 1.05:
            chosen.append(spec)
            total += spec.seconds
    return sorted(chosen, key=lambda spec: spec.name)


def link_batch(clip_folder: Path, batch: list[ClipSpec], folder: Path) -> Path:
    """`folder` holding exactly the batch's clips (hard links, with their sidecars); returns it."""
    if folder.is_dir():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for spec in batch:
        for suffix in (".mp4", ".txt"):
            source = clip_folder / f"{spec.name}{suffix}"
            if source.is_file():
                try:
                    os.link(source, folder / source.name)
                except OSError:
                    shutil.copy(source, folder / source.name)
    return folder


@dataclass
class ClipSetSummary:
    """What a set or batch holds: clips, media seconds, clips per kind and per frame size."""

    clips: int = 0
    seconds: float = 0.0
    kinds: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, specs: list[ClipSpec]) -> ClipSetSummary:
        summary = cls(len(specs), sum(spec.seconds for spec in specs))
        for spec in specs:
            summary.kinds[spec.kind] = summary.kinds.get(spec.kind, 0) + 1
            size = f"{spec.size[0]}x{spec.size[1]}"
            summary.sizes[size] = summary.sizes.get(size, 0) + 1
        return summary

    def describe(self) -> str:
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(self.kinds.items()))
        sizes = ", ".join(f"{count} at {size}" for size, count in sorted(self.sizes.items()))
        return f"{self.clips} clips, {self.seconds:.1f} s of media ({kinds}; {sizes})"
