"""DQF's Q-UA encoders and Q-CA directions, each run as one group (issue 15: DQF's speed on CPU).

`affectflow.fusion.dqf` keeps one module per modality (`QueryUnimodalEncoder`) and per pair
(`QueryCrossAttention`, two `QueryCrossDirection`s); their parameters and their own `forward`s are unchanged.
The DQF model runs them through the functions here instead: layer i of all M encoders is one grouped layer,
layer i of all 2P cross directions another, so a forward makes about (M + 2P) times fewer tiny matrix
products. Sequences are zero-padded to the longest modality T; padded positions lie outside every span, so
they are masked out of every attention and zeroed after every layer, exactly as the sequences' own padding.
"""

from __future__ import annotations

import torch
from einops import rearrange

from affectflow.fusion.contract import ModalityBatch, masked_mean, zero_masked
from affectflow.fusion.grouped import (GroupedAttentionMask, StackedParameters, bank_attention, bank_feed_forward,
                                       bank_layer_norm, bank_linear, bank_pre_ln_block, pad_time)


def stacked_queries(tables: list, batch_size: int, length: int) -> torch.Tensor:
    """The first `length` rows of each QueryTable, per sample: [G, B, T, dim] (ValueError if T is too long)."""
    for table in tables:
        if length > table.max_length:
            raise ValueError(f"DQF: sequence length {length} exceeds the learnable query table "
                             f"(max_length={table.max_length}); build the model with a larger max_length")
    rows = torch.stack([table.weight for table in tables])[:, :length]  # one slice, one gradient scatter
    return rows.unsqueeze(1).expand(-1, batch_size, -1, -1)


def bank_query_update(bank: StackedParameters, layer: int, name: str, query: torch.Tensor, span: torch.Tensor,
                      mask: GroupedAttentionMask) -> torch.Tensor:
    """Eq. 3 for each group's `QueryUpdate` `name`: Q [G, B, T, D] -> LayerNorm(MHSA(Q) + Q), zero outside span."""
    prefix = f"{name}." if name else ""
    attended = bank_attention(bank, layer, f"{prefix}attention", query, query, query, mask)
    return zero_masked(bank_layer_norm(bank, layer, f"{prefix}norm", attended + query), span)


def encode_grouped(model, batch: ModalityBatch, spans: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv1D + Q-UA (Eq. 2-4) of every modality: -> (H [M, B, T, dim] zero outside span, span [M, B, T]).

    T is the longest modality's length; modality m's own frames are H[m, :, :T_m].
    """
    modalities = model.task_spec.modalities
    encoders = [model.encoders[m] for m in modalities]
    length = max(batch.features[m].shape[1] for m in modalities)
    hidden = torch.stack([pad_time(encoder.embed(batch.features[m], batch.valid(m), spans[m]), length)
                          for m, encoder in zip(modalities, encoders)])
    span = torch.stack([pad_time(spans[m], length) for m in modalities])
    query = stacked_queries([encoder.queries for encoder in encoders], batch.batch_size, length)
    mask = GroupedAttentionMask.build(span, span)
    layers = range(len(encoders[0].layers))
    updates = StackedParameters([[encoder.updates[i] for encoder in encoders] for i in layers])
    blocks = StackedParameters([[encoder.layers[i] for encoder in encoders] for i in layers])
    for index in layers:
        query = bank_query_update(updates, index, "", query, span, mask)
        hidden = bank_pre_ln_block(blocks, index, hidden + query, span, mask)
    final = StackedParameters([encoders])
    return zero_masked(bank_layer_norm(final, 0, "norm", hidden), span), span


def cross_layer_grouped(bank: StackedParameters, layer: int, z: torch.Tensor, own: torch.Tensor,
                        own_span: torch.Tensor, other: torch.Tensor,
                        masks: tuple[GroupedAttentionMask, GroupedAttentionMask]) -> torch.Tensor:
    """Each direction's `QueryCrossLayer` (Eq. 3 + Eq. 5): z, own, other [G, B, T, D] -> z [G, B, T, D]."""
    self_mask, outer_mask = masks
    z = bank_query_update(bank, layer, "query_update", z, own_span, self_mask)
    z = bank_layer_norm(bank, layer, "norm_inner", z + bank_attention(bank, layer, "inner", z, own, z, self_mask))
    z = bank_layer_norm(bank, layer, "norm_outer", z + bank_attention(bank, layer, "outer", z, other, other, outer_mask))
    z = bank_layer_norm(bank, layer, "norm_ff", z + bank_feed_forward(bank, layer, "ff", z))
    return zero_masked(z, own_span)


def cross_grouped(model, hidden: torch.Tensor, span: torch.Tensor, per_position: bool) -> dict[str, torch.Tensor]:
    """Q-CA of every pair (Eq. 5-8) from H [M, B, T, D] / span [M, B, T]: {"ab": [B, D] (or [B, T, D])}.

    Directions are ordered a->b, b->a per pair; each starts from its pair's shared query Q_ab.
    """
    modalities = model.task_spec.modalities
    crosses = [model.cross[a + b] for a, b in model.pairs]
    directions = [d for cross in crosses for d in (cross.forward_direction, cross.backward_direction)]
    own_index = [modalities.index(m) for a, b in model.pairs for m in (a, b)]
    other_index = [modalities.index(m) for a, b in model.pairs for m in (b, a)]
    own, own_span = hidden[own_index], span[own_index]
    other, other_span = hidden[other_index], span[other_index]
    tables = [cross.queries for cross in crosses]
    query = stacked_queries(tables, hidden.shape[1], hidden.shape[2]).repeat_interleave(2, dim=0)
    z = zero_masked(query, own_span)
    masks = (GroupedAttentionMask.build(own_span, own_span), GroupedAttentionMask.build(other_span, own_span))
    layers = range(len(directions[0].layers))
    bank = StackedParameters([[d.layers[i] for d in directions] for i in layers])
    for index in layers:
        z = cross_layer_grouped(bank, index, z, own, own_span, other, masks)
    if per_position:
        readout = zero_masked(z, own_span)
    else:
        readout = rearrange(masked_mean(rearrange(z, "g b t d -> (g b) t d"), rearrange(own_span, "g b t -> (g b) t")),
                            "(g b) d -> g b d", g=z.shape[0])
    pairs_in = rearrange(readout, "(p two) b ... d -> p b ... (two d)", two=2)  # cat(H_a->b, H_b->a), Eq. 7
    merged = bank_linear(StackedParameters([crosses]), 0, "merge", pairs_in)
    pair_span = rearrange(own_span, "(p two) b t -> p two b t", two=2).any(1)  # span_a | span_b
    if per_position:
        merged = zero_masked(merged, pair_span)
    else:
        merged = merged * pair_span.any(-1).unsqueeze(-1).to(merged.dtype)
    return {a + b: merged[index] for index, (a, b) in enumerate(model.pairs)}


__all__ = ["encode_grouped", "cross_grouped", "cross_layer_grouped", "bank_query_update", "stacked_queries"]
