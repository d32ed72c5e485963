"""Datasets over a manifest + feature stores, collation into `ModalityBatch`, length bucketing.

- `MultimodalDataset`: one item per segment (utterance level: utterance vectors [1, D] or frame
  sequences [T, D]) or per dialogue (conversation level: the dialogue's utterance vectors [L, D],
  ordered by utterance_index, one label per utterance).
- Real missingness comes from the stores (`FeatureSequence.is_missing`, `read_utterance`'s present
  flag); simulated missingness is added later: training schedules mark it in `Batch.dropped` (the real
  features stay available to auxiliary losses), evaluation protocols remove it from the inputs.
- `FeatureNormalizer`: per-modality mean/std fitted on the TRAIN dataset only, saved in checkpoints.
- `Item` is one segment or dialogue before batching; `collate` pads items to the longest sequence of the batch; `LengthBucketSampler` keeps padding small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from affectflow.extractors.store import FeatureStore
from affectflow.fusion.contract import ModalityBatch, TaskSpec
from affectflow.extractors.spec import ExtractorSpec

from affectflow.pipeline.core.names import IGNORE_INDEX, SPLIT_ALIASES, normalize_split
from affectflow.pipeline.train.labels import unlabelled_mask


def split_rows(table: pd.DataFrame, split: str) -> pd.DataFrame:
    """The manifest rows of one split ('train' / 'valid' / 'test', aliases accepted)."""
    wanted = normalize_split(split)
    if "split" not in table.columns or table["split"].isna().all():
        raise ValueError("the manifest has no 'split' column values; give splits or use a fold helper")
    names = table["split"].astype("string").fillna("").str.strip().str.lower()
    keep = names.map(lambda n: SPLIT_ALIASES.get(n, n)) == wanted
    return table[keep.to_numpy(dtype=bool)].reset_index(drop=True)


def class_names_from(table: pd.DataFrame, column: str) -> tuple[str, ...]:
    """Sorted distinct labels of `column` (call it on the train rows)."""
    if column not in table.columns:
        raise ValueError(f"label column {column!r} not in the manifest (columns: {list(table.columns)})")
    values = table[column].dropna().astype(str).str.strip()
    names = tuple(sorted(v for v in values.unique() if v))
    if len(names) < 2:
        raise ValueError(f"label column {column!r} has fewer than two classes: {names}")
    return names


@dataclass
class Item:
    """One dataset item: a segment (utterance level) or a dialogue (conversation level), unbatched.

    features: {modality: [T, D] float32} (T = frames, 1 for an utterance vector, or the dialogue's
    utterances); masks: {modality: [T] bool} valid positions; present: {modality: bool} any valid
    position; target: class index / score (utterance level) or [L] of them (conversation level),
    -100 / NaN where unlabelled.
    """

    item_id: str
    segment_ids: list[str]
    features: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    present: dict[str, bool]
    target: int | float | np.ndarray

    @property
    def any_present(self) -> bool:
        """Whether at least one modality has a valid position."""
        return any(self.present.values())


@dataclass
class FeatureNormalizer:
    """Per-modality feature standardisation: (x - mean) / std, fitted on train data only.

    A modality never observed in the train data keeps mean 0 / std 1 (identity).
    """

    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]

    @classmethod
    def fit(cls, dataset: "MultimodalDataset") -> "FeatureNormalizer":
        """Mean/std over all valid frames of present modalities of `dataset` (the train split)."""
        sums: dict[str, np.ndarray] = {}
        squares: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        for index in range(len(dataset)):
            item = dataset.raw_item(index)
            for m in dataset.task.modalities:
                values = item.features[m][item.masks[m]].astype(np.float64)
                if values.size == 0:
                    continue
                sums[m] = sums.get(m, 0.0) + values.sum(axis=0)
                squares[m] = squares.get(m, 0.0) + (values ** 2).sum(axis=0)
                counts[m] = counts.get(m, 0) + values.shape[0]
        mean, std = {}, {}
        for m in dataset.task.modalities:
            if counts.get(m, 0) == 0:  # never observed (e.g. not recorded): identity transform
                dim = dataset.task.input_dims[m]
                mean[m], std[m] = np.zeros(dim, np.float32), np.ones(dim, np.float32)
                continue
            mu = sums[m] / counts[m]
            var = np.maximum(squares[m] / counts[m] - mu ** 2, 0.0)
            sigma = np.sqrt(var)
            mean[m] = mu.astype(np.float32)
            std[m] = np.where(sigma < 1e-6, 1.0, sigma).astype(np.float32)
        return cls(mean, std)

    def apply(self, modality: str, values: np.ndarray) -> np.ndarray:
        """values [T, D] -> standardised float32 [T, D]."""
        return ((values - self.mean[modality]) / self.std[modality]).astype(np.float32)

    def to_dict(self) -> dict:
        """{modality: {"mean": [D], "std": [D]}} as plain lists (for bundle.json)."""
        return {m: {"mean": self.mean[m].tolist(), "std": self.std[m].tolist()} for m in self.mean}

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureNormalizer":
        """Inverse of `to_dict`."""
        return cls({m: np.asarray(v["mean"], dtype=np.float32) for m, v in data.items()},
                   {m: np.asarray(v["std"], dtype=np.float32) for m, v in data.items()})


def _encode_targets(table: pd.DataFrame, task: TaskSpec, label_column: str | None) -> np.ndarray:
    """Labels of every row: class indices (int64) or float scores; IGNORE / NaN when unlabelled.

    An unlabelled row raises at utterance level (leave it out first: `labelled_rows`); at conversation
    level it is dialogue context with no target.
    """
    fill = IGNORE_INDEX if task.kind == "classification" else np.nan
    if label_column is None:
        return np.full(len(table), fill)
    blank = unlabelled_mask(table, label_column)
    if blank.any() and task.level != "conversation":
        missing = table["segment_id"].astype(str).to_numpy()[blank].tolist()
        raise ValueError(f"{len(missing)} segments have no {label_column!r} label, e.g. {missing[:5]}")
    column = table[label_column][~blank]
    if task.kind == "classification":
        index = {name: i for i, name in enumerate(task.class_names)}
        values = column.astype(str).str.strip().tolist()
        unknown = sorted({v for v in values if v not in index})
        if unknown:
            raise ValueError(f"labels {unknown[:5]} in column {label_column!r} are not among the task's classes "
                             f"{list(task.class_names)}")
        targets = np.full(len(table), IGNORE_INDEX, dtype=np.int64)
        targets[~blank] = [index[v] for v in values]
        return targets
    try:
        scores = pd.to_numeric(column).to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"label column {label_column!r} is not numeric: {error}") from None
    targets = np.full(len(table), np.nan)
    targets[~blank] = scores
    return targets


class MultimodalDataset(Dataset):
    """Manifest rows + one feature store per modality -> padded-ready items.

    table: manifest rows of one split; stores: {modality: FeatureStore} for task.modalities;
    frame_level: read [T, D] sequences instead of utterance vectors (utterance level only).
    Items are `Item`s (features {m: [T, D]}, masks {m: [T]}, present {m: bool}, target).
    A segment absent from a store raises, unless `missing_entries="missing"` (treated as missing).
    `stores[m] = None` declares modality m as not recorded at all: it is missing for every item.
    """

    def __init__(self, table: pd.DataFrame, stores: dict, task: TaskSpec, label_column: str | None,
                 frame_level: bool = False, normalizer: FeatureNormalizer | None = None,
                 missing_entries: str = "error") -> None:
        if task.level == "conversation" and frame_level:
            raise ValueError("conversation-level tasks use utterance vectors; frame_level must be False")
        if missing_entries not in ("error", "missing"):
            raise ValueError(f"missing_entries must be 'error' or 'missing', got {missing_entries!r}")
        absent = [m for m in task.modalities if m not in stores]
        if absent:
            raise ValueError(f"no feature store for modalities {absent}")
        for m in task.modalities:
            if stores[m] is not None and stores[m].output_dim != task.input_dims[m]:
                raise ValueError(f"modality {m}: store has dim {stores[m].output_dim}, task expects {task.input_dims[m]}")
        self.table = table.reset_index(drop=True)
        self.stores, self.task, self.label_column = stores, task, label_column
        self.frame_level, self.normalizer = frame_level, normalizer
        self.segment_ids = self.table["segment_id"].astype(str).tolist()
        self.targets = _encode_targets(self.table, task, label_column)
        self._check_entries(missing_entries)
        self._utterances = None if frame_level else self._load_utterances()
        self.groups = self._dialogue_groups() if task.level == "conversation" else None

    def _check_entries(self, policy: str) -> None:
        self._known: dict[str, set] = {}
        for m in self.task.modalities:
            if self.stores[m] is None:
                self._known[m] = set()
                continue
            known = set(self.stores[m].segment_ids())
            lacking = [s for s in self.segment_ids if s not in known]
            if lacking and policy == "error":
                raise ValueError(f"feature store for modality {m!r} lacks {len(lacking)} of {len(self.segment_ids)} "
                                 f"segments, e.g. {lacking[:5]} (extract them, or pass missing_entries='missing')")
            self._known[m] = known

    def _load_utterances(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Utterance vectors [N, D] and present flags [N] per modality, read once."""
        loaded = {}
        for m in self.task.modalities:
            dim = self.task.input_dims[m]
            values = np.zeros((len(self.segment_ids), dim), dtype=np.float32)
            present = np.zeros(len(self.segment_ids), dtype=bool)
            for i, segment_id in enumerate(self.segment_ids):
                if segment_id in self._known[m]:
                    vector, flag = self.stores[m].read_utterance(segment_id)
                    values[i], present[i] = np.asarray(vector, dtype=np.float32), bool(flag)
            loaded[m] = (values, present)
        return loaded

    def has_modality(self, m: str) -> bool:
        """True when at least one row of this split has modality `m` (stops at the first such row)."""
        if self.stores.get(m) is None:
            return False
        if self._utterances is not None:
            return bool(self._utterances[m][1].any())
        return any(self._read_frames(m, segment_id)[1].any() for segment_id in self.segment_ids
                   if segment_id in self._known[m])

    def _dialogue_groups(self) -> list[np.ndarray]:
        for column in ("dialogue_id", "utterance_index"):
            if column not in self.table.columns or self.table[column].isna().any():
                raise ValueError(f"conversation-level data needs a complete {column!r} column in the manifest")
        order = self.table.sort_values(["dialogue_id", "utterance_index"], kind="stable")
        return [group.index.to_numpy() for _, group in order.groupby("dialogue_id", sort=False)]

    def __len__(self) -> int:
        return len(self.groups) if self.groups is not None else len(self.segment_ids)

    def length(self, index: int) -> int:
        """Sequence length of item `index` (frames, or utterances of a dialogue) for bucketing."""
        if self.groups is not None:
            return len(self.groups[index])
        if not self.frame_level:
            return 1
        return max(self._read_frames(m, self.segment_ids[index])[0].shape[0] for m in self.task.modalities)

    def _read_frames(self, m: str, segment_id: str) -> tuple[np.ndarray, np.ndarray]:
        dim = self.task.input_dims[m]
        if segment_id not in self._known[m]:
            return np.zeros((1, dim), np.float32), np.zeros(1, bool)
        sequence = self.stores[m].read(segment_id)
        if sequence.num_frames == 0:
            return np.zeros((1, dim), np.float32), np.zeros(1, bool)
        return sequence.values.astype(np.float32), sequence.mask.astype(bool)

    def _segment_item(self, row: int) -> Item:
        features, masks, present = {}, {}, {}
        for m in self.task.modalities:
            if self.frame_level:
                values, mask = self._read_frames(m, self.segment_ids[row])
            else:
                vectors, flags = self._utterances[m]
                values, mask = vectors[row:row + 1], flags[row:row + 1]
            features[m], masks[m], present[m] = values, mask, bool(mask.any())
        return Item(self.segment_ids[row], [self.segment_ids[row]], features, masks, present, self.targets[row])

    def _dialogue_item(self, rows: np.ndarray) -> Item:
        features, masks, present = {}, {}, {}
        for m in self.task.modalities:
            vectors, flags = self._utterances[m]
            features[m], masks[m] = vectors[rows], flags[rows]
            present[m] = bool(masks[m].any())
        ids = [self.segment_ids[r] for r in rows]
        dialogue = str(self.table.loc[rows[0], "dialogue_id"])
        return Item(dialogue, ids, features, masks, present, self.targets[rows])

    def raw_item(self, index: int) -> Item:
        """Item `index` before normalisation."""
        if self.groups is not None:
            return self._dialogue_item(self.groups[index])
        return self._segment_item(index)

    def __getitem__(self, index: int) -> Item:
        """Item `index`, normalised (padding and missing positions stay 0)."""
        item = self.raw_item(index)
        if self.normalizer is not None:
            for m in self.task.modalities:
                normalized = self.normalizer.apply(m, item.features[m])
                item.features[m] = np.where(item.masks[m][:, None], normalized, 0.0).astype(np.float32)
        return item


@dataclass
class Batch:
    """A collated batch: model inputs, targets ([B] or [B, L]; -100 / NaN = ignore) and sample ids.

    Real absence is `inputs.presence` False (or a False frame mask): the features are gone. A SIMULATED
    drop (a training schedule hiding a modality that was recorded) is `dropped` True: `inputs` keep the
    real features, so models that need them for auxiliary losses (CM-ARR's L_rec) can read them, while
    the prediction sees only `visible_inputs()`. dropped: [B, M] (per sample) or [B, L, M] (per
    utterance of a dialogue), in the order of `inputs.modalities`; None = nothing dropped.
    """

    inputs: ModalityBatch
    targets: torch.Tensor
    ids: list[str]
    utterance_ids: list[list[str]]
    dropped: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "Batch":
        """The batch with inputs, targets and the drop mask on `device`."""
        dropped = None if self.dropped is None else self.dropped.to(device)
        return Batch(self.inputs.to(device), self.targets.to(device), self.ids, self.utterance_ids, dropped)

    def with_inputs(self, inputs: ModalityBatch) -> "Batch":
        """The same targets, ids and drop mask with other model inputs (e.g. after a protocol)."""
        return Batch(inputs, self.targets, self.ids, self.utterance_ids, self.dropped)

    def with_dropped(self, dropped: torch.Tensor | np.ndarray) -> "Batch":
        """The batch with `dropped` ([B, M] or [B, L, M] bool) added to its simulated drops."""
        dropped = torch.as_tensor(dropped, dtype=torch.bool, device=self.inputs.device)
        if self.dropped is not None:
            if self.dropped.shape != dropped.shape:
                raise ValueError(f"drop masks of shapes {tuple(self.dropped.shape)} and {tuple(dropped.shape)} "
                                 f"cannot be combined (samples {self.ids[:3]})")
            dropped = dropped | self.dropped
        return Batch(self.inputs, self.targets, self.ids, self.utterance_ids, dropped)

    def visible_inputs(self) -> ModalityBatch:
        """What the prediction may see: `inputs` without the simulated drops (presence or per-utterance
        frame masks set False where `dropped`)."""
        if self.dropped is None:
            return self.inputs
        keep = ~self.dropped
        if keep.ndim == 2:
            return self.inputs.with_presence(self.inputs.presence & keep)
        masks = {m: self.inputs.masks[m] & keep[:, :, i] for i, m in enumerate(self.inputs.modalities)}
        return ModalityBatch(dict(self.inputs.features), masks, self.inputs.presence, self.inputs.modalities)


def collate(items: Sequence[Item], task: TaskSpec) -> Batch:
    """Pad items into a `Batch`: features [B, T_max, D] (zeros), masks [B, T_max], presence [B, M]."""
    if not items:
        raise ValueError("cannot collate an empty list of items")
    features, masks = {}, {}
    for m in task.modalities:
        longest = max(item.features[m].shape[0] for item in items)
        x = np.zeros((len(items), longest, task.input_dims[m]), dtype=np.float32)
        valid = np.zeros((len(items), longest), dtype=bool)
        for b, item in enumerate(items):
            t = item.features[m].shape[0]
            x[b, :t], valid[b, :t] = item.features[m], item.masks[m]
        features[m], masks[m] = torch.from_numpy(x), torch.from_numpy(valid)
    presence = torch.tensor([[item.present[m] for m in task.modalities] for item in items], dtype=torch.bool)
    inputs = ModalityBatch(features, masks, presence, task.modalities)
    return Batch(inputs, _collate_targets(items, task), [item.item_id for item in items],
                 [list(item.segment_ids) for item in items])


def _collate_targets(items: Sequence[Item], task: TaskSpec) -> torch.Tensor:
    classification = task.kind == "classification"
    dtype = torch.long if classification else torch.float32
    if task.level == "utterance":
        return torch.tensor(np.array([item.target for item in items]), dtype=dtype)
    longest = max(len(item.segment_ids) for item in items)
    fill = IGNORE_INDEX if classification else math.nan
    targets = torch.full((len(items), longest), fill, dtype=dtype)
    for b, item in enumerate(items):
        targets[b, :len(item.segment_ids)] = torch.as_tensor(item.target, dtype=dtype)
    return targets


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar length: shuffle, cut into pools of `pool_batches` batches, sort each pool
    by length, batch it, then shuffle the batch order. Without shuffle, batches follow sorted length."""

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = True, seed: int = 0,
                 pool_batches: int = 50, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = np.asarray(lengths)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.pool_batches, self.drop_last, self.epoch = pool_batches, drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shuffle for `epoch` (a resumed run replays the same order)."""
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        indices = np.arange(len(self.lengths))
        generator = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle:
            indices = generator.permutation(indices)
            pool = self.batch_size * self.pool_batches
            indices = np.concatenate([chunk[np.argsort(self.lengths[chunk], kind="stable")]
                                      for chunk in np.array_split(indices, max(1, math.ceil(len(indices) / pool)))])
        else:
            indices = indices[np.argsort(self.lengths, kind="stable")]
        batches = [indices[i:i + self.batch_size].tolist() for i in range(0, len(indices), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in generator.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.batch_size)
        return full + (0 if self.drop_last or rest == 0 else 1)


def make_loader(dataset: MultimodalDataset, batch_size: int, shuffle: bool, seed: int = 0,
                num_workers: int = 0) -> DataLoader:
    """A DataLoader with length bucketing and `collate` for `dataset.task`."""
    lengths = [dataset.length(i) for i in range(len(dataset))]
    sampler = LengthBucketSampler(lengths, batch_size, shuffle=shuffle, seed=seed)
    task = dataset.task
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                      collate_fn=lambda items: collate(items, task))


def open_feature_stores(features_dir: str | Path | None, overrides: dict[str, str | Path] | None = None,
                        modalities: Sequence[str] = ("a", "t", "v"),
                        expected: dict[str, ExtractorSpec | None] | None = None) -> dict:
    """{modality: FeatureStore} from a folder of stores (one sub-folder each) plus explicit paths.

    A modality with several stores under `features_dir` takes the one whose config hash matches
    `expected[m]` (an extractor spec, e.g. from a checkpoint bundle), else must be given explicitly
    (overrides[m]). Modalities without any store are left out (the caller decides if that is an error).
    """
    stores = {m: FeatureStore.open(Path(p)) for m, p in (overrides or {}).items() if p is not None}
    for m, store in stores.items():
        if store.modality != m:
            raise ValueError(f"store given for modality {m!r} holds modality {store.modality!r} features")
    if features_dir is None:
        return stores
    root = Path(features_dir)
    if not root.is_dir():
        raise ValueError(f"features folder not found: {root}")
    found: dict[str, list] = {}
    for candidate in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            store = FeatureStore.open(candidate)
        except (ValueError, FileNotFoundError, OSError):
            continue  # not a feature store (e.g. a log folder)
        found.setdefault(store.modality, []).append((candidate, store))
    for m in modalities:
        if m in stores or m not in found:
            continue
        wanted = (expected or {}).get(m)
        wanted_hash = None if wanted is None else ExtractorSpec.coerce(wanted).config_hash
        matching = [entry for entry in found[m] if entry[1].spec.config_hash == wanted_hash]
        if len(matching) == 1:
            stores[m] = matching[0][1]
            continue
        if len(found[m]) > 1:
            names = [str(path) for path, _ in found[m]]
            raise ValueError(f"several {m!r} feature stores under {root}: {names}; choose one with --features-{m}")
        stores[m] = found[m][0][1]
    return stores


def session_column_of(table: pd.DataFrame) -> str:
    """The manifest column naming IEMOCAP sessions ('session' or 'Session'); raises when absent."""
    for column in ("session", "Session"):
        if column in table.columns:
            return column
    raise ValueError("leave-one-session-out needs a 'session' column in the manifest")


def leave_one_session_out(table: pd.DataFrame, test_session, valid_fraction: float = 0.1, seed: int = 0,
                          session_column: str | None = None) -> pd.DataFrame:
    """IEMOCAP fold: `test_session` -> test; a seeded `valid_fraction` of the other sessions'
    dialogues (whole dialogues, so no conversation straddles splits) -> valid; the rest -> train.

    Returns a copy of `table` with the `split` column rewritten.
    """
    column = session_column or session_column_of(table)
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    sessions = table[column].astype(str)
    is_test = (sessions == str(test_session)).to_numpy()
    if not is_test.any():
        raise ValueError(f"session {test_session!r} not found in column {column!r} (have {sorted(sessions.unique())})")
    groups = table["dialogue_id"].astype(str) if "dialogue_id" in table.columns else table["segment_id"].astype(str)
    train_groups = np.array(sorted(groups[~is_test].unique()))
    generator = np.random.default_rng(seed)
    count = max(1, int(round(valid_fraction * len(train_groups))))
    valid_groups = set(generator.choice(train_groups, size=count, replace=False).tolist())
    result = table.copy()
    split = np.where(is_test, "test", np.where(groups.isin(valid_groups).to_numpy(), "valid", "train"))
    result["split"] = pd.array(split, dtype="string")
    return result


def session_folds(table: pd.DataFrame, session_column: str | None = None) -> list[str]:
    """The sessions of a leave-one-session-out protocol, sorted (IEMOCAP: 5 folds)."""
    column = session_column or session_column_of(table)
    return sorted(table[column].dropna().astype(str).unique())
