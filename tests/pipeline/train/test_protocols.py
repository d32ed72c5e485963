"""Missing-modality protocols and training schedules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectflow.fusion.contract import FusionOutput, ModalityBatch, TaskSpec
from affectflow.pipeline.train import protocols
from affectflow.pipeline.train.data import Batch
from affectflow.pipeline.train.schedules import make_schedule, random_pattern_batch


def _batch(batch_size=4, length=6, presence=None, ragged=True) -> ModalityBatch:
    generator = torch.Generator().manual_seed(0)
    features = {m: torch.randn(batch_size, length, 3, generator=generator) + 5.0 for m in "atv"}
    masks = {m: torch.ones(batch_size, length, dtype=torch.bool) for m in "atv"}
    if ragged:
        for m in "atv":
            masks[m][0, length // 2:] = False  # padded tail of sample 0
    if presence is None:
        presence = torch.ones(batch_size, 3, dtype=torch.bool)
    return ModalityBatch(features, masks, presence)


def test_parse_condition_forms():
    assert protocols.parse_condition("ta") == ("a", "t")
    assert protocols.parse_condition("{a, l}") == ("a", "t")  # MCULoRA's "l"
    assert protocols.parse_condition(["v", "a"]) == ("a", "v")
    assert protocols.parse_condition("full") == ("a", "t", "v")
    assert protocols.condition_name(("v", "t")) == "tv"
    with pytest.raises(ValueError, match="bad modality condition"):
        protocols.parse_condition("x")
    with pytest.raises(ValueError):
        protocols.parse_condition("")
    assert protocols.conditions_for(("a", "t", "v")) == list(protocols.CONDITIONS)
    assert protocols.conditions_for(("t",)) == ["t"]
    assert len(protocols.CONDITIONS) == 7 and protocols.INCOMPLETE_CONDITIONS[-1] == "tv"


def test_apply_condition_keeps_real_missingness():
    presence = torch.tensor([[True, False, True], [True, True, True]])
    batch = protocols.apply_condition(_batch(2, presence=presence), "at")
    assert batch.presence.tolist() == [[True, False, False], [True, True, False]]


def test_random_patterns_never_empty_and_cover_all():
    generator = np.random.default_rng(0)
    patterns = protocols.random_patterns(2000, 3, generator, include_complete=True)
    assert patterns.any(axis=1).all()
    assert len({tuple(p) for p in patterns}) == 7
    incomplete = protocols.random_patterns(500, 3, generator, include_complete=False)
    assert not incomplete.all(axis=1).any() and len({tuple(p) for p in incomplete}) == 6
    # one modality: the only non-empty pattern is the complete one, whatever include_complete says
    assert protocols.random_patterns(5, 1, generator, include_complete=False).all()


def test_random_protocol_is_per_id_not_per_batch():
    keys = [f"seg{i}" for i in range(8)]
    whole = protocols.apply_random_protocol(_batch(8, ragged=False), keys, seed=66).presence
    first = protocols.apply_random_protocol(_batch(4, ragged=False), keys[:4], seed=66).presence
    second = protocols.apply_random_protocol(_batch(4, ragged=False), keys[4:], seed=66).presence
    assert torch.equal(whole, torch.cat([first, second]))
    other_seed = protocols.apply_random_protocol(_batch(8, ragged=False), keys, seed=1).presence
    assert not torch.equal(whole, other_seed)
    assert whole.any(dim=1).all() and not whole.all(dim=1).any()  # MCULoRA: one or two missing


def test_random_protocol_conversation_level_masks_each_utterance():
    batch = _batch(2, length=5, ragged=False)
    keys = [[f"d0_u{t}" for t in range(5)], [f"d1_u{t}" for t in range(3)]]
    result = protocols.apply_random_protocol(batch, keys, seed=66)
    stacked = torch.stack([result.masks[m] for m in "atv"], dim=-1)  # [B, T, M]
    assert stacked[0].any(dim=-1).all() and stacked[1, :3].any(dim=-1).all()
    assert torch.equal(result.presence, batch.presence)


def test_mask_frames_rate_zero_and_one():
    batch = _batch()
    unchanged = protocols.mask_frames(batch, "a", 0.0, np.random.default_rng(0))
    assert all(torch.equal(unchanged.features[m], batch.features[m]) for m in "atv")
    masked = protocols.mask_frames(batch, "a", 1.0, np.random.default_rng(0))
    valid = batch.masks["a"]
    assert (masked.features["a"][valid] == 0).all()
    assert torch.equal(masked.features["a"][~valid], batch.features["a"][~valid])  # padding untouched
    assert torch.equal(masked.features["t"], batch.features["t"])
    assert torch.equal(masked.masks["a"], batch.masks["a"])  # DQF: the model is not told


def test_mask_frames_counts_consecutive_noise_and_mark_invalid():
    batch = _batch(batch_size=3, length=10, ragged=False)
    generator = np.random.default_rng(1)
    result = protocols.mask_frames(batch, "tv", 0.3, generator, pattern="consecutive", fill="noise", mark_invalid=True)
    for m in "tv":
        hit = ~result.masks[m]
        assert (hit.sum(dim=1) == 3).all()
        for row in hit:
            positions = torch.nonzero(row).flatten()
            assert (positions.diff() == 1).all()  # one run
        # noise replaced the +5-shifted features: the hit frames are near N(0, 1)
        assert result.features[m][hit].abs().mean() < 2.0
    assert torch.equal(result.masks["a"], batch.masks["a"])


def test_mask_frames_stochastic_rounding_on_single_frames():
    batch = _batch(batch_size=400, length=1, ragged=False)
    result = protocols.mask_frames(batch, "a", 0.3, np.random.default_rng(2))
    share = (result.features["a"][:, 0] == 0).all(dim=-1).float().mean().item()
    assert share == pytest.approx(0.3, abs=0.07)


def test_mask_frames_rejects_bad_settings():
    with pytest.raises(ValueError, match="rate"):
        protocols.mask_frames(_batch(), "a", 1.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="pattern"):
        protocols.mask_frames(_batch(), "a", 0.5, np.random.default_rng(0), pattern="blocks")


def test_frame_protocol_points_exclude_everything_missing():
    points = protocols.frame_protocol_points(("a", "t", "v"))
    assert len(points) == 7 * 11 - 1
    assert ("atv", 1.0) not in points and ("atv", 0.9) in points and ("a", 1.0) in points


def test_auilc_hand_values():
    assert protocols.auilc([0.0, 0.5, 1.0], [1.0, 0.5, 0.0]) == pytest.approx(0.5)
    # trapezoids 0.1*(0.8+0.6)/2 + 0.8*(0.6+0.6)/2 = 0.55 over a span of 0.9
    assert protocols.auilc([0.0, 0.1, 0.9], [0.8, 0.6, 0.6]) == pytest.approx(0.55 / 0.9)
    with pytest.raises(ValueError):
        protocols.auilc([0.0], [1.0])


def _collated(batch_size=6, conversation=False):
    inputs = _batch(batch_size, length=4, ragged=False)
    targets = torch.zeros(batch_size, 4, dtype=torch.long) if conversation else torch.zeros(batch_size, dtype=torch.long)
    ids = [f"s{i}" for i in range(batch_size)]
    return Batch(inputs, targets, ids, [[f"{i}_{t}" for t in range(4)] for i in range(batch_size)])


def test_schedules_transform_batches():
    generator = np.random.default_rng(0)
    fixed = make_schedule("fixed", condition="t")
    assert fixed.validation == "t"
    # Schedules drop by simulation: the prediction's view loses the modality, the real inputs keep it.
    out = fixed.transform(_collated(), None, "main", generator)
    assert out.visible_inputs().presence.tolist() == [[False, True, False]] * 6
    assert out.inputs.presence.all() and out.dropped.tolist() == [[True, False, True]] * 6
    random = make_schedule("random")
    out = random.transform(_collated(50), None, "main", generator)
    visible = out.visible_inputs().presence
    assert visible.any(dim=1).all() and not visible.all(dim=1).all()
    conversation = random_pattern_batch(_collated(3, conversation=True), generator)
    assert torch.equal(conversation.visible_inputs().presence, torch.ones(3, 3, dtype=torch.bool))
    assert conversation.dropped.shape == (3, 4, 3)
    stacked = torch.stack([conversation.visible_inputs().masks[m] for m in "atv"], dim=-1)
    assert stacked.any(dim=-1).all() and not stacked.all(dim=-1).all()
    with pytest.raises(ValueError, match="needs a condition"):
        make_schedule("fixed")
    with pytest.raises(ValueError, match="unknown training schedule"):
        make_schedule("curriculum")


def test_staged_schedule_first_stage_is_complete():
    class TwoStage:
        stages = ("experts", "mixing")

    schedule = make_schedule("momke")
    assert schedule.stages(TwoStage()) == ("experts", "mixing")
    generator = np.random.default_rng(0)
    first = schedule.transform(_collated(40), None, "experts", generator)
    assert first.visible_inputs().presence.all()
    later = schedule.transform(_collated(40), None, "mixing", generator)
    assert not later.visible_inputs().presence.all()


def test_dpft_schedule_updates_from_reported_scores_and_resumes():
    task = TaskSpec("classification", {"a": 3, "t": 3, "v": 3}, ("x", "y"))

    class Reporting:
        task_spec = task

    schedule = make_schedule("mculora")
    schedule.begin_epoch(Reporting(), "mcla", 0)
    uniform = schedule.sampler.probabilities.clone()
    out = schedule.transform(_collated(20), Reporting(), "mcla", np.random.default_rng(0))
    assert out.visible_inputs().presence.any(dim=1).all()
    scores = torch.linspace(0.1, 0.7, 7)
    output = FusionOutput(embedding=torch.zeros(1), extras={"dpft_scores": scores, "dpft_counts": torch.ones(7)})
    schedule.after_step(Reporting(), out, output)
    schedule.end_epoch(Reporting(), "mcla", 0)
    assert not torch.allclose(schedule.sampler.probabilities, uniform)
    assert schedule.sampler.probabilities.sum().item() == pytest.approx(1.0)
    restored = make_schedule("dpft")
    restored.load_state_dict(schedule.state_dict())
    restored.begin_epoch(Reporting(), "mcla", 1)
    assert torch.allclose(restored.sampler.probabilities, schedule.sampler.probabilities)
    # a model that reports nothing leaves the probabilities uniform
    silent = make_schedule("dpft")
    silent.begin_epoch(Reporting(), "main", 0)
    silent.after_step(Reporting(), out, FusionOutput(embedding=torch.zeros(1)))
    silent.end_epoch(Reporting(), "main", 0)
    assert torch.allclose(silent.sampler.probabilities, uniform)
