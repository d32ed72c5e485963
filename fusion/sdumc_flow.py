"""SDUMC's two UMCA flows in one pass (issue 15: SDUMC's speed on CPU).

`affectflow.fusion.sdumc` keeps one module per modality and per view (input projections, UMCA
attentions, MLPs) and the parameters are unchanged. The model runs them through `double_flow` here:

- both flows are one batch of 2B rows, the real flow first, the simulated flow (text from the simulator)
  second; audio and vision are projected once and shared by both halves (the projection has no dropout,
  so this is the same value), text rows are padded to the longer of the two text lengths;
- the M modalities' attentions and MLPs run as one group (stacked parameters), and so do the K view-query
  MLPs; MIA-1 / MIA-2 run on the simulated half only, as before.
- with one frame per sequence (utterance vectors) the softmax over the one key is exactly 1 whatever the query
  and the key: R = V, so the keys, the queries and the view-query MLPs are skipped (`_ZeroGradients` gives their
  parameters the exact zero gradient they had), and the K identical view rows of stage 2 share their MLP work
  up to the first active dropout (`single_key_mlp`).

Padded frames are invalid, so they get exactly zero attention weight (Eq. 2 masks them). Dropout draws its
masks from the random stream in a different order than two separate flows did (same distribution: every
row still gets its own masks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from affectflow.fusion.contract import zero_masked
from affectflow.fusion.grouped import StackedParameters, bank_linear, pad_time
from affectflow.fusion.layers import safe_key_mask
from affectflow.fusion.stacked import dropout


@dataclass
class FlowOutput:
    """Both flows (rows [real B; simulated B]): r [2B, d], R_t [2B, D], R_t^seq [2B, K, d], weights."""

    representation: torch.Tensor
    text_stage1: torch.Tensor
    text_stage2: torch.Tensor
    modality_weights: torch.Tensor
    view_weights: torch.Tensor


def grouped_mlp(bank: StackedParameters, x: torch.Tensor) -> torch.Tensor:
    """Each group's `_mlp` (Linear-ReLU-Dropout, optionally twice): x [G, ..., D_in] -> [G, ..., D_out]."""
    mlp = bank.grid[0][0]
    for index in range(0, len(mlp), 3):
        x = dropout(F.relu(bank_linear(bank, 0, str(index), x)), mlp[index + 2].p, mlp[index + 2].training)
    return x


def grouped_tanh_attention(attentions: StackedParameters, query: torch.Tensor, values: torch.Tensor,
                           mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 1-2 for every modality at once (`TanhKeyCrossAttention`): K_m = tanh(W_m V_m + b_m),
    R_m = softmax(Q K_m^T / tau) V_m.

    query [M, N, S, D], values [M, N, T, D] (zero behind mask), mask [M, N, T] -> R [M, N, S, D]; a row
    without a valid frame gives zeros.
    """
    usable, has_key = safe_key_mask(rearrange(mask, "m n t -> (m n) t"))
    usable, has_key = usable.reshape(mask.shape), has_key.reshape(mask.shape[:2])
    keys = torch.tanh(bank_linear(attentions, 0, "key", values))
    scores = torch.einsum("mnsd,mntd->mnst", query, keys) / temperature
    scores = scores.masked_fill(~usable[:, :, None, :], torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1) * has_key[:, :, None, None].to(scores.dtype)
    return torch.einsum("mnst,mntd->mnsd", weights, values)


def embed_both_flows(model, features: dict[str, torch.Tensor], valid: dict[str, torch.Tensor],
                     simulated: torch.Tensor, simulated_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E_m = Linear(x_m) for both flows: -> (E [M, 2B, T, D] zero behind the mask, mask [M, 2B, T]).

    Text rows are the real text then the simulated text; every other modality is projected once and repeated.
    T is the longest sequence of any modality or flow (shorter ones are zero-padded, padding invalid).
    """
    modalities = model.task_spec.modalities
    length = max([features[m].shape[1] for m in modalities] + [simulated.shape[1]])
    embedded, masks = [], []
    for m in modalities:
        if m == "t":
            text_length = max(features["t"].shape[1], simulated.shape[1])
            x = torch.cat([pad_time(features["t"], text_length), pad_time(simulated, text_length)])
            mask = torch.cat([pad_time(valid["t"], text_length), pad_time(simulated_mask, text_length)])
            projected = zero_masked(model.input_projection[m](x), mask)
        else:
            mask = valid[m].repeat(2, 1)
            projected = zero_masked(model.input_projection[m](features[m]), valid[m]).repeat(2, 1, 1)
        embedded.append(pad_time(projected, length))
        masks.append(pad_time(mask, length))
    return torch.stack(embedded), torch.stack(masks)


def imagine_text(mia, stage: torch.Tensor, text_index: int, half: int) -> torch.Tensor:
    """MIA (Eq. 5-6) on the simulated half's text: stage [M, 2B, ...] -> the same with rows half: of text refined."""
    items = list(stage.unbind(0))
    others = [x[half:] for i, x in enumerate(items) if i != text_index][::-1]  # (v, a) order as in Eq. 5
    refined = mia(torch.cat(others, dim=-1), items[text_index][half:])
    items[text_index] = torch.cat([items[text_index][:half], refined])
    return torch.stack(items)


class _ZeroGradients(torch.autograd.Function):
    """Identity on x that hands `parameters` the exactly-zero gradient a dead branch would have given them.

    Used where a branch is skipped because its result provably cannot change the output (a softmax over
    one key): the parameters still get a zero gradient, not None, so the optimiser (weight decay, Adam's
    moments) treats them exactly as before.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, *parameters: torch.Tensor) -> torch.Tensor:
        ctx.shapes = [(p.shape, p.dtype, p.device) for p in parameters]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (grad, *(torch.zeros(shape, dtype=dtype, device=device) for shape, dtype, device in ctx.shapes))


def single_key_mlp(bank: StackedParameters, values: torch.Tensor, views: int) -> torch.Tensor:
    """`grouped_mlp` of the stage-2 attention output when every row has at most one key.

    values [M, N, D] (the one key's value, zero if there is none) -> [M, N, K, D_out], the same as
    `grouped_mlp(bank, values[:, :, None].expand(-1, -1, K, -1))`: the K views' rows are identical up to the
    first active dropout, so everything before it runs once per row and is expanded there (each view row
    still draws its own dropout mask).
    """
    mlp, x, expanded = bank.grid[0][0], values, False
    for index in range(0, len(mlp), 3):
        x = F.relu(bank_linear(bank, 0, str(index), x))
        p, training = mlp[index + 2].p, mlp[index + 2].training
        if not expanded and training and p > 0:
            x, expanded = x[:, :, None].expand(-1, -1, views, -1), True
        x = dropout(x, p, training)
    return x if expanded else x[:, :, None].expand(-1, -1, views, -1)


def _stage1_attention(model, embedded: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Eq. 1-2 with the learnable modality queries: -> (R [M, 2B, D], parameters skipped with one key)."""
    modalities = model.task_spec.modalities
    attentions = [model.stage1_attention[m] for m in modalities]
    queries = [model.modality_queries[m] for m in modalities]
    if mask.shape[-1] == 1:  # softmax over one key is exactly 1: R = V (zero where the key is invalid)
        return embedded[:, :, 0], [p for a in attentions for p in a.parameters()] + queries
    queries = torch.stack(queries)[:, None].expand(-1, embedded.shape[1], -1, -1)
    attended = grouped_tanh_attention(StackedParameters([attentions]), queries, embedded, mask, attentions[0].temperature)
    return attended.squeeze(2), []


def _stage2(model, gathered_rows: torch.Tensor, embedded: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """View queries (MLP_c), Eq. 1-2 over every modality and the stage-2 MLPs: -> (R^seq [M, 2B, K, d], skipped
    parameters). gathered_rows [K, 2B, D] are the AFG-weighted sums that the view-query MLPs take."""
    modalities = model.task_spec.modalities
    attentions = [model.stage2_attention[m] for m in modalities]
    mlps = StackedParameters([[model.stage2_mlp[m] for m in modalities]])
    if mask.shape[-1] == 1:  # one key: every view reads the same value, the queries cannot matter
        skipped = [p for a in attentions for p in a.parameters()] + list(model.view_query_mlp.parameters())
        return single_key_mlp(mlps, embedded[:, :, 0], len(model.view_query_mlp)), skipped
    view_queries = grouped_mlp(StackedParameters([list(model.view_query_mlp)]), gathered_rows)  # [K, 2B, D]
    views_query = rearrange(view_queries, "k n d -> n k d")[None].expand(len(modalities), -1, -1, -1)
    attended = grouped_tanh_attention(StackedParameters([attentions]), views_query, embedded, mask, attentions[0].temperature)
    return grouped_mlp(mlps, attended), []


def double_flow(model, features: dict[str, torch.Tensor], valid: dict[str, torch.Tensor], simulated: torch.Tensor,
                simulated_mask: torch.Tensor) -> FlowOutput:
    """UMCA (stage 1, AFG, stage 2, AFG) of the real flow and of the simulated flow (MIA-1/MIA-2 active).

    features[m] [B, T_m, D_m] (zero behind valid), valid[m] [B, T_m], simulated text [B, T_s, D_t] with its
    mask [B, T_s] -> FlowOutput with rows [real B; simulated B]. When every sequence has one frame (utterance
    vectors) the attentions are a softmax over one key, exactly 1: their keys, queries and the view-query MLPs
    are skipped (same values, and their parameters get the zero gradient they got before).
    """
    modalities, half = model.task_spec.modalities, next(iter(valid.values())).shape[0]
    text_index = modalities.index("t")
    embedded, mask = embed_both_flows(model, features, valid, simulated, simulated_mask)
    present = mask.any(-1)  # [M, 2B]
    keep = present.to(embedded.dtype)[..., None]
    attended, skipped = _stage1_attention(model, embedded, mask)
    stage1 = grouped_mlp(StackedParameters([[model.stage1_mlp[m] for m in modalities]]), attended) * keep
    stage1 = imagine_text(model.mia_stage1, stage1, text_index, half)
    present = present.clone()
    present[text_index, half:] = True  # the simulated flow's text is imagined from here on
    keep = present.to(embedded.dtype)[..., None, None]
    stage1_rows = rearrange(stage1, "m n d -> n m d")
    modality_weights = model.modality_gathering(stage1_rows, present.T)
    gathered = torch.einsum("nm,km,nmd->knd", modality_weights, model.combination_mask.to(stage1.dtype), stage1_rows)
    stage2, skipped_stage2 = _stage2(model, gathered, embedded, mask)
    stage2 = imagine_text(model.mia_stage2, stage2 * keep, text_index, half)
    views = torch.einsum("nm,mnkd->nkd", modality_weights, stage2)
    view_weights = model.view_gathering(views, torch.ones(views.shape[:2], dtype=torch.bool, device=views.device))
    representation = torch.einsum("nk,nkd->nd", view_weights, views)
    skipped = [p for p in skipped + skipped_stage2 if p.requires_grad]
    if skipped and torch.is_grad_enabled():
        representation = _ZeroGradients.apply(representation, *skipped)
    return FlowOutput(representation, stage1[text_index], stage2[text_index], modality_weights, view_weights)


__all__ = ["FlowOutput", "double_flow", "embed_both_flows", "grouped_mlp", "grouped_tanh_attention", "imagine_text",
           "single_key_mlp"]
