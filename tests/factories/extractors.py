"""Tiny random-weight Hugging Face models for tests and benchmarks, saved like real checkpoints.

Each builder makes a ~32-wide, 3-layer model from its config class, with the matching feature
extractor / tokenizer / image processor, and `save_pretrained`s both into a folder, so tests load
them through the very `from_pretrained` path used for hub ids:

    paths = save_tiny_models(tmp_path)            # {"wav2vec2": Path, "bert": Path, "vit": Path, ...}
    create_extractor("hf_audio", model=str(paths["wavlm"]), layers="last4")

Weights are seeded (deterministic) but meaningless. Needs no network.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from affectflow.pipeline.media.faces import FaceTrack
from factories.media import face_image

HIDDEN = 32
LAYERS = 3  # 4 hidden states with the embeddings: enough for layers="last4"
AUDIO_KINDS = ("wav2vec2", "wavlm", "hubert", "data2vec-audio")
TEXT_KINDS = ("bert", "deberta-v2")
VISION_KINDS = ("vit", "clip-vision", "clip", "dinov2")
_SMALL = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=64)


def tiny_vocab() -> list[str]:
    """A WordPiece vocabulary that spells any lowercase ASCII text (letters as word pieces)."""
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = ["i", "am", "so", "happy", "sad", "angry", "to", "see", "you", "today", "this", "is", "not", "good",
             "bad", "wonderful", "news", "the", "a", "and", "very", "what", "are", "doing", "oh", "no", "yes"]
    letters = list(string.ascii_lowercase + string.digits)
    punctuation = list(".,!?'\"-:;()")
    return special + words + letters + [f"##{c}" for c in letters] + punctuation


def _seeded(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    torch.manual_seed(0)
    return build().eval()


def save_tiny_audio_model(folder: str | Path, kind: str = "wav2vec2") -> Path:
    """A tiny speech encoder of `kind` (wav2vec2 / wavlm / hubert / data2vec-audio) in `folder`.

    wav2vec2 and hubert use the base-style group-norm front end (no attention mask); wavlm and
    data2vec-audio the large-style layer-norm front end with an attention mask.
    """
    import transformers as tf

    conv = dict(conv_dim=(HIDDEN,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    layer_norm = dict(feat_extract_norm="layer", do_stable_layer_norm=True)
    builders = {
        "wav2vec2": lambda: tf.Wav2Vec2Model(tf.Wav2Vec2Config(**_SMALL, **conv, feat_extract_norm="group")),
        "hubert": lambda: tf.HubertModel(tf.HubertConfig(**_SMALL, **conv, feat_extract_norm="group")),
        "wavlm": lambda: tf.WavLMModel(tf.WavLMConfig(**_SMALL, **conv, **layer_norm)),
        "data2vec-audio": lambda: tf.Data2VecAudioModel(tf.Data2VecAudioConfig(**_SMALL, **conv)),
    }
    if kind not in builders:
        raise ValueError(f"unknown tiny audio kind {kind!r}; choose from {AUDIO_KINDS}")
    folder = Path(folder)
    model = _seeded(builders[kind])
    uses_mask = getattr(model.config, "feat_extract_norm", "layer") == "layer"
    model.save_pretrained(folder)
    tf.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                return_attention_mask=uses_mask).save_pretrained(folder)
    return folder


def save_tiny_text_model(folder: str | Path, kind: str = "bert") -> Path:
    """A tiny text encoder of `kind` (bert / deberta-v2) with a WordPiece tokenizer in `folder`."""
    import transformers as tf

    vocab = {token: index for index, token in enumerate(tiny_vocab())}
    common = dict(**_SMALL, vocab_size=len(vocab), max_position_embeddings=64)
    builders = {
        "bert": lambda: tf.BertModel(tf.BertConfig(**common)),
        "deberta-v2": lambda: tf.DebertaV2Model(tf.DebertaV2Config(**common, relative_attention=True,
                                                                    position_buckets=16, pos_att_type=["p2c", "c2p"])),
    }
    if kind not in builders:
        raise ValueError(f"unknown tiny text kind {kind!r}; choose from {TEXT_KINDS}")
    folder = Path(folder)
    _seeded(builders[kind]).save_pretrained(folder)
    # transformers 5: BertTokenizerFast(vocab_file=...) ignores the file; BertTokenizer(vocab=dict) works.
    tf.BertTokenizer(vocab=vocab, model_max_length=64).save_pretrained(folder)
    return folder


def save_tiny_vision_model(folder: str | Path, kind: str = "vit") -> Path:
    """A tiny 32x32-pixel image encoder of `kind` (vit / clip-vision / clip / dinov2) in `folder`.

    "clip" is a whole CLIP checkpoint (image + text towers), "clip-vision" its vision tower alone.
    """
    import transformers as tf

    image = dict(image_size=32, patch_size=8)
    square = {"height": 32, "width": 32}
    builders = {
        "vit": (lambda: tf.ViTModel(tf.ViTConfig(**_SMALL, **image)),
                lambda: tf.ViTImageProcessor(size=square)),
        "clip-vision": (lambda: tf.CLIPVisionModel(tf.CLIPVisionConfig(**_SMALL, **image, projection_dim=16)),
                        lambda: tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=square)),
        "clip": (lambda: tf.CLIPModel(tf.CLIPConfig(
                    text_config=dict(**_SMALL, vocab_size=len(tiny_vocab()), max_position_embeddings=32,
                                     pad_token_id=0, bos_token_id=2, eos_token_id=3),
                    vision_config=dict(**_SMALL, **image), projection_dim=16)),
                 lambda: tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=square)),
        "dinov2": (lambda: tf.Dinov2Model(tf.Dinov2Config(**_SMALL, **image)),
                   lambda: tf.BitImageProcessor(size={"shortest_edge": 32}, crop_size=square)),
    }
    if kind not in builders:
        raise ValueError(f"unknown tiny vision kind {kind!r}; choose from {VISION_KINDS}")
    folder = Path(folder)
    build_model, build_processor = builders[kind]
    _seeded(build_model).save_pretrained(folder)
    build_processor().save_pretrained(folder)
    return folder


def save_tiny_models(root: str | Path, kinds: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Save every tiny model (or only `kinds`) under `root`/<kind>; returns kind -> folder."""
    root = Path(root)
    savers = {**{k: save_tiny_audio_model for k in AUDIO_KINDS}, **{k: save_tiny_text_model for k in TEXT_KINDS},
              **{k: save_tiny_vision_model for k in VISION_KINDS}}
    chosen = kinds if kinds is not None else tuple(savers)
    unknown = [kind for kind in chosen if kind not in savers]
    if unknown:
        raise ValueError(f"unknown tiny model kinds {unknown}; choose from {sorted(savers)}")
    return {kind: savers[kind](root / kind, kind) for kind in chosen}


def synthetic_face_track(mask: list[bool], crop_size: int = 112, start: float = 1.0, fps: float = 5.0):
    """A FaceTrack without running a detector: the real astronaut face (shifted a little per frame)
    as the crop of every frame where `mask` is True, on a `fps` timeline from `start` seconds."""
    mask_array = np.asarray(mask, dtype=bool)
    count, valid = len(mask_array), int(mask_array.sum())
    face = cv2.resize(face_image(), (crop_size, crop_size), interpolation=cv2.INTER_AREA)
    crops = (np.stack([np.roll(face, shift=3 * i, axis=1) for i in range(valid)]) if valid
             else np.zeros((0, crop_size, crop_size, 3), np.uint8))
    boxes = np.full((count, 4), np.nan, np.float32)
    boxes[mask_array] = (0, 0, crop_size, crop_size)
    probabilities = np.where(mask_array, 0.99, np.nan).astype(np.float32)
    return FaceTrack(crops=crops, mask=mask_array, times=start + np.arange(count) / fps, boxes=boxes,
                     probabilities=probabilities, landmarks=np.full((count, 5, 2), np.nan, np.float32))
