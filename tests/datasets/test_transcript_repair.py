"""Transcript repair: cp1252 bytes and mojibake back to proper Unicode, reported as changed."""

from __future__ import annotations

import pytest

from affectflow.datasets.text import clean_transcript, decode_annotation_bytes, repair_mojibake


@pytest.mark.parametrize("broken, fixed", [
    ("heâ€™s", "he’s"),
    ("cafÃ©", "café"),
    ("â€œHiâ€\x9d", "“Hi”"),
    ("it\x92s", "it’s"),
    ("Â£5", "£5"),
    ("naïve â€” ok", "naïve — ok"),
])
def test_mojibake_is_repaired(broken, fixed):
    assert repair_mojibake(broken) == (fixed, True)


@pytest.mark.parametrize("text", ["plain ’ text", "Ã", "naïve", "", "ascii only"])
def test_proper_text_is_left_alone(text):
    assert repair_mojibake(text) == (text, False)


def test_mixed_bytes_decode():
    data = b"\xef\xbb\xbf" + "he’s".encode("utf-8") + b" it\x92s \x93x\x94"
    assert decode_annotation_bytes(data) == ("he’s it’s “x”", 3)
    kept, count = decode_annotation_bytes(data, keep_undecodable=True)
    assert count == 3 and "\udc92" in kept and repair_mojibake(kept) == ("he’s it’s “x”", True)
    assert decode_annotation_bytes("plain".encode("utf-8")) == ("plain", 0)


def test_clean_transcript():
    assert clean_transcript("  Iâ€™m   here \n") == ("I’m here", True)
    assert clean_transcript("   ") == (None, False)
    assert clean_transcript(None) == (None, False)
