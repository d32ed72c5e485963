"""Makers of small real media for tests and benchmarks (needs `ffmpeg` and `espeak-ng` on PATH).

The talking-face clip moves and zooms a real face photo (scikit-image's astronaut, no download)
frame by frame with OpenCV, speaks a sentence with espeak-ng and muxes both to H.264 + AAC with
ffmpeg (OpenCV's wheel cannot write H.264 itself).
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import cv2
import numpy as np


def require_tool(name: str) -> str:
    """Path of a command-line tool, or RuntimeError saying how to install it."""
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not on PATH; install it with `apt-get install {name}`")
    return found


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr[-2000:]}")


def face_image() -> np.ndarray:
    """A real face photo, RGB uint8 (the astronaut, cropped to the head and shoulders)."""
    from skimage import data

    image = data.astronaut()  # 512x512 RGB, face around x 150-260, y 20-170
    return np.ascontiguousarray(image[0:300, 80:380])


def _face_frames(num_frames: int, size: tuple[int, int], with_face: bool) -> list[np.ndarray]:
    width, height = size
    rng = np.random.default_rng(0)
    frames = []
    if with_face:
        face = face_image()
    for index in range(num_frames):
        phase = index / max(num_frames - 1, 1)
        if with_face:
            zoom = 0.55 + 0.15 * np.sin(2 * np.pi * phase)
            scaled = cv2.resize(face, None, fx=zoom * height / face.shape[0], fy=zoom * height / face.shape[0])
            canvas = np.full((height, width, 3), 90, dtype=np.uint8)
            x = int((width - scaled.shape[1]) * (0.3 + 0.4 * phase))
            y = int((height - scaled.shape[0]) * 0.5)
            canvas[y:y + scaled.shape[0], x:x + scaled.shape[1]] = scaled
        else:
            canvas = np.zeros((height, width, 3), dtype=np.uint8)
            canvas[:] = (40 + 60 * phase, 120, 200 - 60 * phase)
            cv2.circle(canvas, (int(width * phase), height // 2), 20, (255, 255, 0), -1)
            canvas = np.clip(canvas.astype(np.int16) + rng.integers(-5, 5, canvas.shape), 0, 255).astype(np.uint8)
        frames.append(canvas)
    return frames


def write_speech(path: Path, text: str = "I am so happy to see you today, this is wonderful news.",
                 seconds: float | None = None, voice: str | None = None) -> Path:
    """Speak `text` with espeak-ng into a WAV file (padded/cut to `seconds` when given; `voice`: an espeak-ng
    voice such as "de" for German, default English)."""
    path = Path(path)
    _run([require_tool("espeak-ng"), *(["-v", voice] if voice else []), "-w", str(path), text])
    if seconds is not None:
        tmp = path.with_name(path.stem + ".pad.wav")
        _run([require_tool("ffmpeg"), "-y", "-loglevel", "error", "-i", str(path), "-af", "apad",
              "-t", f"{seconds}", str(tmp)])
        tmp.replace(path)
    return path


def write_silence(path: Path, seconds: float, sample_rate: int = 16000) -> Path:
    """A WAV file of digital silence."""
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(np.zeros(int(seconds * sample_rate), dtype=np.int16).tobytes())
    return Path(path)


def make_video(path: str | Path, seconds: float = 3.0, fps: int = 25, size: tuple[int, int] = (320, 240),
               face: bool = True, audio: str | None = "speech", text: str | None = None) -> Path:
    """Write an H.264 mp4 (plus AAC audio unless `audio=None`).

    face: draw the moving real face (else an abstract scene with no face).
    audio: "speech" (espeak-ng), "silence" (a silent track), or None (no audio stream).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg = require_tool("ffmpeg")
    num_frames = int(round(seconds * fps))
    raw = path.with_name(path.stem + ".frames.avi")
    writer = cv2.VideoWriter(str(raw), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for frame in _face_frames(num_frames, size, with_face=face):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    command = [ffmpeg, "-y", "-loglevel", "error", "-i", str(raw)]
    wav = None
    if audio is not None:
        wav = path.with_name(path.stem + ".audio.wav")
        if audio == "speech":
            write_speech(wav, text or "I am so happy to see you today, this is wonderful news.", seconds=seconds)
        elif audio == "silence":
            write_silence(wav, seconds)
        else:
            raise ValueError(f"audio must be 'speech', 'silence' or None, got {audio!r}")
        command += ["-i", str(wav), "-c:a", "aac", "-b:a", "64k", "-ar", "16000"]
    command += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "ultrafast", "-t", f"{seconds}",
                "-shortest" if audio else "-an", str(path)]
    _run(command)
    raw.unlink(missing_ok=True)
    if wav is not None:
        wav.unlink(missing_ok=True)
    return path


def make_truncated(source: str | Path, path: str | Path, keep_fraction: float = 0.3) -> Path:
    """Copy the first part of a media file only (a download cut short)."""
    data = Path(source).read_bytes()
    Path(path).write_bytes(data[: max(1, int(len(data) * keep_fraction))])
    return Path(path)


def make_media_set(folder: str | Path, seconds: float = 2.0) -> dict[str, Path]:
    """The standard set of test media in `folder`: name -> path.

    talking_face (face + speech), no_audio, no_face (speech, no face), silent (face, silent track),
    speech_wav (audio only), truncated, zero_bytes, not_media (text with an .mp4 name).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    media = {
        "talking_face": make_video(folder / "talking_face.mp4", seconds=seconds),
        "no_audio": make_video(folder / "no_audio.mp4", seconds=seconds, audio=None),
        "no_face": make_video(folder / "no_face.mp4", seconds=seconds, face=False),
        "silent": make_video(folder / "silent.mp4", seconds=seconds, audio="silence"),
        "speech_wav": write_speech(folder / "speech.wav", seconds=seconds),
    }
    media["truncated"] = make_truncated(media["talking_face"], folder / "truncated.mp4")
    media["zero_bytes"] = folder / "zero_bytes.mp4"
    media["zero_bytes"].write_bytes(b"")
    media["not_media"] = folder / "not_media.mp4"
    media["not_media"].write_text("this is not a video, just text\n", encoding="utf-8")
    return media


def write_utterances(path: str | Path, sentences: list[str], pause_seconds: float = 1.75,
                     sample_rate: int = 16000) -> list[tuple[float, float]]:
    """Speak each sentence with espeak-ng and join them with `pause_seconds` of digital silence (also before
    the first and after the last) into a 16-bit mono WAV at `path`; returns each sentence's true speech span
    (start, end) in seconds: from its first to its last sample above 1% of full scale."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pause = np.zeros(int(round(pause_seconds * sample_rate)), np.float32)
    pieces, spans, offset = [pause], [], len(pause)
    for number, sentence in enumerate(sentences):
        spoken = path.with_name(f"{path.stem}.utterance{number}.wav")
        resampled = spoken.with_suffix(".16k.wav")
        write_speech(spoken, sentence)
        _run([require_tool("ffmpeg"), "-y", "-loglevel", "error", "-i", str(spoken), "-ac", "1",
              "-ar", str(sample_rate), str(resampled)])
        with wave.open(str(resampled), "rb") as handle:
            samples = np.frombuffer(handle.readframes(handle.getnframes()), np.int16).astype(np.float32) / 32768
        spoken.unlink()
        resampled.unlink()
        loud = np.flatnonzero(np.abs(samples) > 0.01)
        samples = samples[loud[0]:loud[-1] + 1]  # espeak's own leading/trailing quiet is not speech
        spans.append((offset / sample_rate, (offset + len(samples)) / sample_rate))
        pieces += [samples, pause]
        offset += len(samples) + len(pause)
    audio = np.concatenate(pieces)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16).tobytes())
    return spans


def mux_with_face(wav: str | Path, path: str | Path, fps: int = 10, size: tuple[int, int] = (160, 120)) -> Path:
    """An H.264 + AAC mp4 at `path`: the moving real face for the whole length of `wav`, with `wav` as its
    audio track."""
    with wave.open(str(wav), "rb") as handle:
        seconds = handle.getnframes() / handle.getframerate()
    path = Path(path)
    silent = make_video(path.with_name(path.stem + ".video.mp4"), seconds=seconds, fps=fps, size=size, audio=None)
    _run([require_tool("ffmpeg"), "-y", "-loglevel", "error", "-i", str(silent), "-i", str(wav), "-c:v", "copy",
          "-c:a", "aac", "-b:a", "64k", "-ar", "16000", "-shortest", str(path)])
    silent.unlink()
    return path
