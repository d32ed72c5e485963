"""A file whose name is not UTF-8 (POSIX names are bytes: a Latin-1 `café` is b'caf\\xe9') decodes like any
other: the decoders cannot encode such a name, so it is handed to them as /proc/self/fd/N."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from affectflow.pipeline.media.decode import iter_audio_windows, opened_path, probe, read_audio, read_frames

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX byte names and /proc are Linux's")


def latin1_copy(source: Path, folder: Path, suffix: str) -> Path:
    """A copy of `source` named b'caf\\xe9<suffix>' (not UTF-8), as Python sees it (surrogate escapes)."""
    target = Path(os.fsdecode(os.fsencode(str(folder)) + b"/caf\xe9" + suffix.encode()))
    shutil.copyfile(source, target)
    return target


def test_a_latin1_named_video_decodes_as_its_utf8_named_copy(media, tmp_path):
    named = latin1_copy(media["talking_face"], tmp_path, ".mp4")
    with pytest.raises(UnicodeEncodeError):
        str(named).encode("utf-8")  # the name really is not UTF-8
    want, got = probe(media["talking_face"]), probe(named)
    assert (got.duration, got.has_video, got.has_audio, got.fps) == (want.duration, want.has_video, want.has_audio,
                                                                     want.fps)
    np.testing.assert_array_equal(read_audio(named).samples, read_audio(media["talking_face"]).samples)
    np.testing.assert_array_equal(read_frames(named, fps=2).frames, read_frames(media["talking_face"], fps=2).frames)


def test_a_latin1_named_wav_streams_in_windows(media, tmp_path):
    named = latin1_copy(media["speech_wav"], tmp_path, ".wav")
    joined = np.concatenate([window for window in iter_audio_windows(named, window_seconds=0.5)])
    whole = np.concatenate([window for window in iter_audio_windows(media["speech_wav"], window_seconds=0.5)])
    np.testing.assert_array_equal(joined, whole)


def test_opened_path_passes_utf8_names_through_and_closes_its_descriptor(tmp_path):
    plain = tmp_path / "café.wav"  # UTF-8: unchanged
    plain.write_bytes(b"x")
    with opened_path(plain) as name:
        assert name == str(plain)
    odd = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.wav"))
    odd.write_bytes(b"x")
    with opened_path(odd) as name:
        assert name.startswith("/proc/self/fd/") and Path(name).read_bytes() == b"x"
    with pytest.raises(OSError):  # the descriptor handed over is closed again
        os.fstat(int(name.rsplit("/", 1)[1]))
