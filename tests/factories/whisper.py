"""A tiny random-weight Whisper converted to CTranslate2, for the `whisper` extractor's tests.

    folder = save_tiny_whisper_model(tmp_path / "whisper")    # a CTranslate2 model folder
    create_extractor("whisper", model=str(folder))            # the path users pass for their own models

A 16-wide, 1-layer `WhisperForConditionalGeneration` (80 mel bins, 1500 encoder positions like every
Whisper) with a 26-letter byte-level BPE tokenizer is saved with `save_pretrained` and converted by
`ctranslate2.converters.TransformersConverter`, as `ct2-transformers-converter` does for real
checkpoints. Seeded weights, no network; a folder that already holds a converted model is reused.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

WIDTH = 16
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
    "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>",
)


def _save_tokenizer(folder: Path) -> dict[str, int]:
    """A Whisper BPE tokenizer over lowercase letters and the special tokens; returns its vocabulary."""
    import transformers as tf

    vocab = {token: index for index, token in enumerate(list(string.ascii_lowercase) + ["Ġ"] + list(SPECIAL_TOKENS))}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    end = "<|endoftext|>"
    tf.WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), unk_token=end, bos_token=end,
                        eos_token=end, pad_token=end).save_pretrained(folder)
    return vocab


def save_tiny_whisper_model(folder: str | Path) -> Path:
    """Build, save and convert a tiny Whisper into `folder`/ct2; returns that CTranslate2 folder."""
    import transformers as tf
    from ctranslate2.converters import TransformersConverter

    folder = Path(folder)
    converted = folder / "ct2"
    if (converted / "model.bin").is_file():
        return converted
    source = folder / "hf"
    source.mkdir(parents=True, exist_ok=True)
    vocab = _save_tokenizer(source)
    end, start = vocab["<|endoftext|>"], vocab["<|startoftranscript|>"]
    config = tf.WhisperConfig(
        vocab_size=len(vocab) + 4, num_mel_bins=80, d_model=WIDTH, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=2 * WIDTH, decoder_ffn_dim=2 * WIDTH,
        max_source_positions=1500, max_target_positions=32, pad_token_id=end, bos_token_id=end, eos_token_id=end,
        decoder_start_token_id=start, suppress_tokens=[], begin_suppress_tokens=[])
    torch.manual_seed(0)
    tf.WhisperForConditionalGeneration(config).eval().save_pretrained(source)
    TransformersConverter(str(source)).convert(str(converted), force=True)
    return converted
