"""Explicit list of built-in extractor modules; importing this module registers them all."""

# Each import registers its extractors with affectflow.extractors.base. Add new modules here.
from affectflow.extractors import audio, signal, text, vision  # noqa: F401,E401  hf_audio, logmel, prosody, hf_text, hf_vision
from affectflow.extractors import fer, manet  # noqa: F401,E401  fer (FER2013 mini-Xception), manet (MA-Net face encoder)
from affectflow.extractors import whisper  # noqa: F401,E401  whisper (CTranslate2 Whisper encoder frames)
