"""MCULoRA's dynamic parameter fine-tuning (DPFT, Eq. 9-10): adaptive sampling of modality combinations.

`DPFTSampler` turns the per-combination decoupling scores MCULoRA reports (Eq. 8, `dpft_scores` /
`dpft_counts` in `FusionOutput.extras`) into combination sampling probabilities: change between updates
(Eq. 9), ranking with ties broken at random by a seeded generator, sigmoid-scaled +/- step (Eq. 10), and
projection onto bounded probabilities. The model side and the interpretations are documented in
`affectflow.fusion.mculora`; the training schedule that drives the sampler is "dpft"
(`affectflow.pipeline.train.schedules`).
"""

from __future__ import annotations

from typing import Sequence

import torch

from affectflow.fusion.contract import MODALITIES, FusionOutput


def project_to_bounded_simplex(values: torch.Tensor, low: float, high: float, iterations: int = 60) -> torch.Tensor:
    """Closest-shift projection: p = clamp(values + tau, low, high) with tau chosen so that sum(p) = 1.

    values: [N] float. Needs N * low <= 1 <= N * high. Bisection on tau (sum is monotone in tau).
    """
    n = values.numel()
    if n * low > 1.0 + 1e-9 or n * high < 1.0 - 1e-9:
        raise ValueError(f"bounds [{low}, {high}] cannot hold {n} probabilities summing to one")
    lower, upper = low - float(values.max()), high - float(values.min())
    for _ in range(iterations):
        tau = 0.5 * (lower + upper)
        if float((values + tau).clamp(low, high).sum()) > 1.0:
            upper = tau
        else:
            lower = tau
    projected = (values + 0.5 * (lower + upper)).clamp(low, high)
    return projected / projected.sum()


def rank_with_random_ties(values: torch.Tensor, tolerance: float, generator: torch.Generator) -> torch.Tensor:
    """1-based ascending ranks [N] (float) of values [N], ties put in a random order drawn from `generator`.

    Values are tied when they chain within `tolerance` in sorted order (each within `tolerance` of the next),
    so float noise in equal scores is a tie too; exact ties are always ties. Index order decides nothing.
    """
    order = torch.argsort(values, stable=True)
    ordered = values[order]
    gaps = ordered[1:] - ordered[:-1]
    group = torch.cat([ordered.new_zeros(1), (gaps > tolerance).to(ordered.dtype).cumsum(0)])
    # group ids are whole numbers, the random keys lie in [0, 1): sorting their sum orders by group, then at random
    keys = torch.rand(len(values), generator=generator, dtype=torch.float64)
    order = order[torch.argsort(group.double().cpu() + keys).to(order.device)]
    rank = torch.empty_like(values)
    rank[order] = torch.arange(1, len(values) + 1, dtype=values.dtype, device=values.device)
    return rank


class DPFTSampler:
    """Dynamic parameter fine-tuning (MCULoRA Eq. 9-10): adaptive sampling of modality combinations.

    Usage in a training loop (MCLA stage, complete training data):
        sampler = DPFTSampler(modality_combinations(task.modalities), task.modalities)
        presence = sampler.sample(batch_size, generator)      # [B, M] bool -> batch.with_presence(...)
        out = model(batch.with_presence(presence), targets); sampler.observe(out)
        sampler.update()                                       # once per epoch (Eq. 9-10)
    What it needs from the model: ``out.extras["dpft_scores"]`` [N] (mean decoupling score s^i of Eq. 8
    per combination over the batch, in `combinations` order) and ``out.extras["dpft_counts"]`` [N]
    (how many unimodal representations each mean covers). `MCULoRA` reports both in the "mcla" stage.
    At conversation level draw one combination per utterance, `sample(B * T).reshape(B, T, M)`, and AND
    it into the frame masks (the model reads the combination of each position from its valid masks).
    The paper computes S_t on held-out data once per epoch: observe validation batches to do the same.

    Ties in the Eq. 10 ranking (score changes within `tie_tolerance` of each other) are broken at random
    with a generator seeded by `seed` (pass the run's seed), never by combination index; `update` also
    takes a generator. `state_dict` records the seed and how many tie-breaks it drew, so a resumed run
    ranks the same.
    """

    def __init__(self, combinations: Sequence[Sequence[str]], modalities: Sequence[str] = MODALITIES,
                 base_probability: float | None = None, adjustment: float = 0.1,
                 min_probability: float | None = None, max_probability: float | None = None,
                 seed: int = 0, tie_tolerance: float = 1e-9) -> None:
        self.modalities = tuple(modalities)
        self.combinations = tuple(tuple(c) for c in combinations)
        n = len(self.combinations)
        if n < 2:
            raise ValueError(f"DPFTSampler needs at least two modality combinations, got {self.combinations}")
        for combo in self.combinations:
            if not combo or set(combo) - set(self.modalities):
                raise ValueError(f"combination {combo} must be a non-empty subset of {self.modalities}")
        self.base_probability = 1.0 / n if base_probability is None else float(base_probability)
        self.adjustment = float(adjustment)
        self.min_probability = 0.5 / n if min_probability is None else float(min_probability)
        self.max_probability = min(1.0, 2.0 / n) if max_probability is None else float(max_probability)
        if not 0.0 < self.base_probability < 1.0 or self.adjustment <= 0:
            raise ValueError("DPFTSampler: base_probability must lie in (0, 1) and adjustment (lambda) be > 0")
        if tie_tolerance < 0:
            raise ValueError(f"DPFTSampler: tie_tolerance must be >= 0, got {tie_tolerance}")
        self.seed, self.tie_tolerance = int(seed), float(tie_tolerance)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(self.seed)
        self._own_tie_breaks = 0  # updates ranked with self.generator (replayed by load_state_dict)
        self.probabilities = project_to_bounded_simplex(torch.full((n,), 1.0 / n, dtype=torch.float64),
                                                        self.min_probability, self.max_probability)
        self.scores = torch.zeros(n, dtype=torch.float64)  # S_0 = 0 (Sec. 3.4)
        self.last_delta = torch.zeros(n, dtype=torch.float64)
        self._sum = torch.zeros(n, dtype=torch.float64)
        self._count = torch.zeros(n, dtype=torch.float64)
        self.presence_table = torch.tensor([[m in c for m in self.modalities] for c in self.combinations])

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw one combination per sample with the current probabilities: presence [batch_size, M] bool."""
        index = torch.multinomial(self.probabilities.float(), batch_size, replacement=True, generator=generator)
        return self.presence_table[index]

    def observe(self, output: FusionOutput) -> None:
        """Accumulate the per-combination decoupling scores a model reported for one batch."""
        if "dpft_scores" not in output.extras or "dpft_counts" not in output.extras:
            raise ValueError("DPFTSampler.observe needs extras 'dpft_scores' and 'dpft_counts' (MCULoRA, stage 'mcla')")
        scores = output.extras["dpft_scores"].detach().double().cpu()
        counts = output.extras["dpft_counts"].detach().double().cpu()
        if scores.shape != self._sum.shape or counts.shape != self._count.shape:
            raise ValueError(f"dpft_scores {tuple(scores.shape)} do not match {len(self.combinations)} combinations")
        self._sum += torch.where(counts > 0, scores * counts, torch.zeros_like(scores))
        self._count += counts

    def update(self, scores: torch.Tensor | Sequence[float] | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """One DPFT step (Eq. 9-10) from S_{t+1} [N] (default: the observed means); returns probabilities [N].

        Combinations without a score (NaN, or never observed) keep their previous score (delta 0). Tied
        score changes are ranked at random by `generator` (default: the sampler's own, seeded by `seed`).
        """
        if scores is None:
            new = torch.where(self._count > 0, self._sum / self._count.clamp(min=1.0), self.scores)
            self._sum.zero_()
            self._count.zero_()
        else:
            new = torch.as_tensor(scores, dtype=torch.float64).flatten().cpu()
            if new.shape != self.scores.shape:
                raise ValueError(f"DPFTSampler.update expects {len(self.combinations)} scores, got {tuple(new.shape)}")
            new = torch.where(torch.isfinite(new), new, self.scores)
        delta = new - self.scores  # Eq. 9
        self.scores, self.last_delta = new, delta
        if generator is None:
            generator = self.generator
            self._own_tie_breaks += 1
        rank = rank_with_random_ties(delta, self.tie_tolerance, generator)
        middle = (len(delta) + 1) / 2.0  # = 2^(M-1) for all 2^M - 1 non-empty combinations
        step = (self.base_probability * self.adjustment * torch.sigmoid(delta)).abs()
        sign = torch.where(rank < middle, 1.0, torch.where(rank > middle, -1.0, 0.0)).to(delta.dtype)
        self.probabilities = project_to_bounded_simplex(self.probabilities + sign * step,
                                                        self.min_probability, self.max_probability)
        return self.probabilities.clone()

    def state_dict(self) -> dict:
        """Everything needed to resume the schedule."""
        return {"probabilities": self.probabilities.tolist(), "scores": self.scores.tolist(),
                "combinations": [list(c) for c in self.combinations],
                "tie_seed": self.seed, "tie_breaks": self._own_tie_breaks}

    def load_state_dict(self, state: dict) -> None:
        """Restore a schedule saved by `state_dict` (same combinations required)."""
        if [tuple(c) for c in state["combinations"]] != list(self.combinations):
            raise ValueError(f"saved DPFT combinations {state['combinations']} differ from {self.combinations}")
        self.probabilities = torch.tensor(state["probabilities"], dtype=torch.float64)
        self.scores = torch.tensor(state["scores"], dtype=torch.float64)
        if "tie_seed" in state:  # replay the tie-break draws; states saved before ties were randomised have none
            self.seed, self._own_tie_breaks = int(state["tie_seed"]), int(state["tie_breaks"])
            self.generator.manual_seed(self.seed)
            for _ in range(self._own_tie_breaks):
                torch.rand(len(self.combinations), generator=self.generator, dtype=torch.float64)


__all__ = ["DPFTSampler", "project_to_bounded_simplex", "rank_with_random_ties"]
