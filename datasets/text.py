"""Text repair for corpus annotation files: mixed UTF-8/cp1252 bytes and mojibake.

Older MELD CSVs mix UTF-8 with Windows-1252 bytes (``0x92`` for a right single quote) and carry
mojibake, i.e. UTF-8 read as cp1252 and saved again ("â€™" for "’", "Ã©" for "é"). These helpers
turn both back into proper Unicode and say whether anything was changed, so recipes can count and
report every repair by segment id.
"""

from __future__ import annotations

import re
import unicodedata

# cp1252 leaves five bytes undefined; mojibake produced by tools that fell back to Latin-1 keeps
# them as C1 control characters, so they map back to their byte value.
_CP1252_UNDEFINED = {0x81, 0x8D, 0x8F, 0x90, 0x9D}


def _char_to_byte_table() -> dict[str, int]:
    table = {}
    for value in range(256):
        if value in _CP1252_UNDEFINED:
            table[chr(value)] = value
        else:
            table[bytes([value]).decode("cp1252")] = value
    return table


_CHAR_TO_BYTE = _char_to_byte_table()
_MOJIBAKE_CONTINUATION = "".join(sorted(ch for ch, byte in _CHAR_TO_BYTE.items() if 0x80 <= byte <= 0xBF))
# A UTF-8 lead byte (0xC2-0xF4) seen as cp1252, followed by 1-3 continuation bytes seen as cp1252.
_SURROGATE = re.compile("[\udc80-\udcff]")
_C1_CONTROL = re.compile("[\x80-\x9f]")
_MOJIBAKE = re.compile("[\u00c2-\u00f4][" + re.escape(_MOJIBAKE_CONTINUATION) + "]{1,3}")


def _cp1252_char(byte: int) -> str:
    return chr(byte) if byte in _CP1252_UNDEFINED else bytes([byte]).decode("cp1252")


def decode_annotation_bytes(data: bytes, keep_undecodable: bool = False) -> tuple[str, int]:
    """Decode file bytes as UTF-8, reading any byte that is not valid UTF-8 as cp1252.

    Returns (text, number of bytes that were not UTF-8). A leading BOM is dropped. With
    `keep_undecodable` those bytes stay as lone surrogates (U+DC80-U+DCFF) so that the caller can
    repair them field by field with `repair_mojibake` and report each repair by segment.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), 0
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", errors="surrogateescape")
    count = len(_SURROGATE.findall(text))
    if count and not keep_undecodable:
        text = _SURROGATE.sub(lambda match: _cp1252_char(ord(match.group(0)) - 0xDC00), text)
    return text, count


def _undo_one(match: re.Match) -> str:
    raw = bytes(_CHAR_TO_BYTE[ch] for ch in match.group(0))
    # The greedy match may swallow a following cp1252 character that was real text: try the
    # longest prefix that is one valid UTF-8 character.
    for length in range(len(raw), 1, -1):
        try:
            decoded = raw[:length].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if len(decoded) == 1:
            rest = match.group(0)[length:]
            return decoded + rest
    return match.group(0)


def repair_mojibake(text: str) -> tuple[str, bool]:
    """Undo UTF-8-read-as-cp1252 mojibake ("â€™" -> "’", "Ã©" -> "é"); returns (text, changed).

    Also turns undecodable bytes kept as surrogates by `decode_annotation_bytes` into their cp1252
    characters, replaces stray C1 control characters that cp1252 would have shown as punctuation
    ("\\x92" -> "’") and applies Unicode NFC normalisation.
    """
    if not text or text.isascii():
        return text, False
    repaired = _SURROGATE.sub(lambda match: _cp1252_char(ord(match.group(0)) - 0xDC00), text)
    for _ in range(2):  # double-encoded mojibake needs two passes
        fixed = _MOJIBAKE.sub(_undo_one, repaired)
        if fixed == repaired:
            break
        repaired = fixed
    repaired = _C1_CONTROL.sub(lambda match: _cp1252_char(ord(match.group(0))), repaired)
    repaired = unicodedata.normalize("NFC", repaired)
    return repaired, repaired != text


def clean_transcript(text: str | None) -> tuple[str | None, bool]:
    """Repair mojibake and collapse whitespace; empty text becomes None. Returns (text, repaired)."""
    if text is None:
        return None, False
    repaired, changed = repair_mojibake(str(text))
    collapsed = " ".join(repaired.split())
    return (collapsed or None), changed
