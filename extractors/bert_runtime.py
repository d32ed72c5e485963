"""A torch-only runtime for BERT-architecture encoders (MiniLM, BERT) in a local folder, without transformers.

Importing transformers' BERT modelling stack costs ~2 CPU-s (torch._dynamo, generation, hub kernels); this
builds the same post-LayerNorm encoder from `torch.nn` pieces (one `TransformerEncoderLayer` per BERT layer,
q/k/v concatenated into its in-projection), reads `model.safetensors` (never a pickle) and tokenises with
the folder's `tokenizer.json` as `AutoTokenizer(folder)(texts, padding=True, truncation=True, max_length=n)`
does. `fast_path_blocker` says why a folder needs transformers instead (None: it does not).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

SUPPORTED_CONFIG = {"model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute",
                    "is_decoder": False, "add_cross_attention": False}
"""config.json values the runtime implements (a missing key means BERT's default, the value shown)."""
TOKENIZER_CLASSES = (None, "BertTokenizer", "BertTokenizerFast")
LAYER_WEIGHTS = {"self_attn.out_proj": "attention.output.dense", "norm1": "attention.output.LayerNorm",
                 "linear1": "intermediate.dense", "linear2": "output.dense", "norm2": "output.LayerNorm"}
"""TransformerEncoderLayer's names -> BERT's (under encoder.layer.i.); query/key/value become in_proj."""
ENCODING_FIELDS = {"input_ids": "ids", "token_type_ids": "type_ids", "attention_mask": "attention_mask",
                   "special_tokens_mask": "special_tokens_mask"}  # model input -> `tokenizers.Encoding` attribute


class EncoderOutput(NamedTuple):
    """What `hf_common.select_layers` reads: [B, L, D] tensors; hidden_states = (embeddings, layer 1, ...)."""

    last_hidden_state: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...]


def _read_json(path: Path) -> dict:
    """The JSON object in `path`; {} when there is no such file or it is not JSON (transformers then says why)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:
        return {}


def fast_path_blocker(model: str, precision: str, trust_remote_code: bool) -> str | None:
    """Why `model` must go through transformers (not a local BERT folder the runtime supports), or None."""
    folder = Path(model)
    config, settings = _read_json(folder / "config.json"), _read_json(folder / "tokenizer_config.json")
    checks = [(not config, "not a local folder with a config.json"),
              (precision != "float32", f"precision {precision} (the runtime is float32)"),
              (trust_remote_code or "auto_map" in config, "remote code"),
              *((config.get(key, value) != value, f"config.json {key}={config.get(key)!r}")
                for key, value in SUPPORTED_CONFIG.items()),
              *((not (folder / name).is_file(), f"no {name}") for name in ("model.safetensors", "tokenizer.json")),
              (settings.get("tokenizer_class") not in TOKENIZER_CLASSES, "another tokenizer_class"),
              (settings.get("padding_side", "right") != "right", "left padding")]
    return next((reason for failed, reason in checks if failed), None)


class BertEncoder(torch.nn.Module):
    """BERT's encoder: token ids [B, L] (+ token types, attention mask) -> every layer's hidden states."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        self.config = SimpleNamespace(**config)  # hidden_size, max_position_embeddings, ... as HF models expose
        width, eps = config["hidden_size"], config.get("layer_norm_eps", 1e-12)
        self.word_embeddings = torch.nn.Embedding(config["vocab_size"], width)
        self.position_embeddings = torch.nn.Embedding(config["max_position_embeddings"], width)
        self.token_type_embeddings = torch.nn.Embedding(config.get("type_vocab_size", 2), width)
        self.embedding_norm = torch.nn.LayerNorm(width, eps=eps)
        self.layers = torch.nn.ModuleList(
            torch.nn.TransformerEncoderLayer(width, config["num_attention_heads"], config["intermediate_size"],
                                             dropout=0.0, activation="gelu", layer_norm_eps=eps, batch_first=True)
            for _ in range(config["num_hidden_layers"]))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                output_hidden_states: bool = True) -> EncoderOutput:
        """input_ids, attention_mask (1 = token, 0 = padding), token_type_ids: [B, L] -> hidden states [B, L, D]
        (always every layer's: `output_hidden_states` is accepted as HF models take it)."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        hidden = self.embedding_norm(self.word_embeddings(input_ids) + self.token_type_embeddings(types)
                                     + self.position_embeddings(positions))
        padding, states = attention_mask == 0, [hidden]
        for layer in self.layers:
            states.append(layer(states[-1], src_key_padding_mask=padding))
        return EncoderOutput(states[-1], tuple(states))


def _renamed_weights(weights: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """HF BERT names (optionally under "bert.") -> BertEncoder's, q/k/v concatenated; pooler/heads dropped."""
    weights = {key.removeprefix("bert.").replace(".gamma", ".weight").replace(".beta", ".bias"): value.float()
               for key, value in weights.items()}
    renamed = {f"{name}.weight": weights[f"embeddings.{name}.weight"]
               for name in ("word_embeddings", "position_embeddings", "token_type_embeddings")}
    renamed |= {f"embedding_norm.{p}": weights[f"embeddings.LayerNorm.{p}"] for p in ("weight", "bias")}
    for index in range(layers):
        source, target = f"encoder.layer.{index}.", f"layers.{index}."
        for p in ("weight", "bias"):
            renamed[f"{target}self_attn.in_proj_{p}"] = torch.cat(
                [weights[f"{source}attention.self.{part}.{p}"] for part in ("query", "key", "value")])
            renamed |= {f"{target}{mine}.{p}": weights[f"{source}{theirs}.{p}"]
                        for mine, theirs in LAYER_WEIGHTS.items()}
    return renamed


def load_bert_encoder(folder: str | Path, device: torch.device | str = "cpu") -> BertEncoder:
    """The encoder of a BERT folder (config.json + model.safetensors) in eval mode, float32, on `device`.

    Raises ValueError naming the file when a weight is missing or has the wrong shape."""
    path = Path(folder) / "model.safetensors"
    config = _read_json(Path(folder) / "config.json")
    encoder = BertEncoder(config)  # random init, then replaced: on the meta device it would import torch._dynamo
    try:
        encoder.load_state_dict(_renamed_weights(load_file(path), config["num_hidden_layers"]), assign=True)
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{path}: not a BERT encoder checkpoint ({error})") from error
    return encoder.to(device).eval()


class BertTokenizer:
    """The WordPiece vocabulary of `tokenizer.json` with BERT's normaliser and [CLS] ... [SEP] template set from
    tokenizer_config.json, as transformers' BertTokenizer(Fast) builds them, padded and truncated as it does."""

    def __init__(self, folder: str | Path) -> None:
        settings = _read_json(Path(folder) / "tokenizer_config.json")
        self.tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        if not isinstance(self.tokenizer.model, models.WordPiece):
            raise ValueError(f"{folder}/tokenizer.json: not a WordPiece vocabulary")
        tokens = {name: _content(settings.get(f"{name}_token"), default)
                  for name, default in (("cls", "[CLS]"), ("sep", "[SEP]"), ("pad", "[PAD]"))}
        ids = {name: self.tokenizer.token_to_id(token) for name, token in tokens.items()}
        if None in ids.values():
            raise ValueError(f"{folder}/tokenizer.json: special tokens {tokens} not all in the vocabulary")
        self.tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=settings.get("tokenize_chinese_chars", True),
            strip_accents=settings.get("strip_accents"), lowercase=settings.get("do_lower_case", True))
        self.tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        self.tokenizer.post_processor = processors.BertProcessing((tokens["sep"], ids["sep"]),
                                                                  (tokens["cls"], ids["cls"]))
        self.tokenizer.enable_padding(pad_id=ids["pad"], pad_token=tokens["pad"])
        limit = settings.get("model_max_length")
        self.model_max_length = limit if isinstance(limit, int) else None

    def __call__(self, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        """input_ids, token_type_ids, attention_mask, special_tokens_mask: int64 [B, L], padded to the longest."""
        self.tokenizer.enable_truncation(max_length)
        encodings = self.tokenizer.encode_batch(texts)
        return {key: torch.tensor([getattr(e, field) for e in encodings], dtype=torch.long)
                for key, field in ENCODING_FIELDS.items()}


def _content(token: str | dict | None, default: str) -> str:
    """A special token of tokenizer_config.json (a string or an AddedToken dict) as its text."""
    return default if token is None else token["content"] if isinstance(token, dict) else str(token)
