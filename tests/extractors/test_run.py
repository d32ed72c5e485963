"""The extraction job and `affectflow extract`, end to end on generated clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from affectflow.extractors import choice, extract
from affectflow.extractors.base import Extractor, ExtractorConfig, InputContract, create_extractor, list_extractors
from affectflow.extractors.run import run_extraction
from affectflow.extractors.store import FeatureStore
from affectflow.pipeline.cli.main import main
from affectflow.pipeline.core.manifest import manifest_from_segments, write_manifest
from affectflow.pipeline.core.records import FeatureSequence, Segment


def write_clip_manifest(path: Path, media: dict, names: list[str], **extra) -> Path:
    segments = [Segment(id=name, media_path=str(media[name]), text="i am so happy to see you") for name in names]
    segments += [Segment(id=sid, media_path=str(media[name]), **fields) for sid, (name, fields) in extra.items()]
    return write_manifest(manifest_from_segments(segments), path)


def open_stores(out: Path) -> dict[str, FeatureStore]:
    return {store.modality: store for store in
            (FeatureStore.open(p) for p in sorted(out.iterdir()) if (p / "spec.json").is_file())}


def test_cli_end_to_end_second_run_skips_and_npy_export(media, tiny_models, tmp_path, capsys):
    manifest = write_clip_manifest(tmp_path / "clips.csv", media, ["talking_face", "no_face", "no_audio"],
                                   middle=("talking_face", dict(start=0.5, end=1.5, text="oh no")))
    out = tmp_path / "features"
    argv = ["extract", "--manifest", str(manifest), "--out", str(out), "--audio", "logmel",
            "--text", str(tiny_models["bert"]), "--vision", str(tiny_models["vit"]), "--face-fps", "4",
            "--export-npy", "utterance", "--no-progress"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert first.count("extracted 4") == 3 and "failed 0" in first
    stores = open_stores(out)
    assert sorted(stores) == ["a", "t", "v"]
    assert all(store.segment_ids() == ["middle", "no_audio", "no_face", "talking_face"] for store in stores.values())
    assert stores["v"].read("no_face").is_missing and not stores["v"].read("talking_face").is_missing
    assert stores["a"].read("no_audio").is_missing and stores["a"].missing_reason("no_audio") == "no audio stream"
    assert not stores["a"].read("no_face").is_missing and not stores["t"].read("no_audio").is_missing
    middle = stores["v"].read("middle")
    assert middle.num_frames == 4 and -0.05 < middle.times[0] < 0.3  # segment-relative (frame start) times

    assert main(argv) == 0  # the second run finds everything stored
    second = capsys.readouterr().out
    assert second.count("extracted 0") == 3 and second.count("skipped 4 already stored") == 3

    for store in stores.values():
        exported = out / "npy-utterance" / store.extractor_id
        arrays = {p.stem: np.load(p) for p in exported.glob("*.npy")}
        assert sorted(arrays) == ["middle", "no_audio", "no_face", "talking_face"]
        assert all(a.shape == (store.output_dim,) and a.dtype == np.float32 for a in arrays.values())
    assert (out / "npy-utterance" / stores["v"].extractor_id / "missing.txt").read_text().split() == ["no_face"]

    from affectflow.pipeline.train.data import open_feature_stores  # the training side finds the stores

    assert {m: s.extractor_id for m, s in open_feature_stores(out).items()} == \
        {m: s.extractor_id for m, s in stores.items()}


def test_failures_are_recorded_and_the_job_goes_on(media, tmp_path):
    names = ["talking_face", "speech_wav", "silent", "truncated", "zero_bytes", "not_media"]
    segments = [Segment(id=name, media_path=str(media[name])) for name in names]
    table = manifest_from_segments(segments + [Segment(id="absent", media_path=str(tmp_path / "nowhere.mp4"))])
    extractor = create_extractor("logmel")
    store = FeatureStore.create(tmp_path / "store", extractor.spec())
    summary = run_extraction(table, extractor, store, progress=False)
    assert summary.extracted == 3 and summary.missing == 1 and summary.skipped == 0
    assert sorted(summary.failed) == ["absent", "not_media", "truncated", "zero_bytes"]
    assert "file is empty" in summary.failed["zero_bytes"] and "not found" in summary.failed["absent"]
    assert store.missing_reason("silent") == "silent audio"
    logged = [json.loads(line) for line in (store.root / "failures.jsonl").read_text().splitlines()]
    assert sorted(entry["segment_id"] for entry in logged) == sorted(summary.failed)
    assert "failed 4" in summary.describe() and "zero_bytes" in summary.describe()


def test_vision_job_on_audio_only_and_broken_files(media, tiny_models, tmp_path):
    from affectflow.pipeline.media.faces import FaceDetector

    table = manifest_from_segments([Segment(id="wav", media_path=str(media["speech_wav"])),
                                    Segment(id="empty", media_path=str(media["zero_bytes"]))])
    extractor = create_extractor("hf_vision", model=str(tiny_models["vit"]))
    store = FeatureStore.create(tmp_path / "v", extractor.spec())
    summary = run_extraction(table, extractor, store, face_detector=FaceDetector(crop_size=32), progress=False)
    assert store.missing_reason("wav") == "no video stream" and list(summary.failed) == ["empty"]
    with pytest.raises(ValueError, match="face_detector"):
        run_extraction(table, extractor, store, progress=False)


class _FragileConfig(ExtractorConfig):
    pass


class FragileExtractor(Extractor):
    """Not registered: fails on transcripts containing 'boom', to test per-item isolation."""

    name, modality, config_class = "fragile", "t", _FragileConfig

    @property
    def contract(self) -> InputContract:
        return InputContract(modality="t")

    @property
    def output_dim(self) -> int:
        return 2

    def extract_batch(self, items):
        if any(item and "boom" in item for item in items):
            raise ValueError("cannot digest 'boom'")
        return [FeatureSequence(np.ones((1, 2), np.float32), np.zeros(1, np.float32), np.ones(1, bool),
                                self.extractor_id) for _ in items]


def test_one_bad_item_fails_alone(tmp_path):
    table = manifest_from_segments([Segment(id=f"s{i}", media_path="unused.mp4", text=text)
                                    for i, text in enumerate(["fine", "boom here", "also fine"])])
    extractor = FragileExtractor(_FragileConfig())
    store = FeatureStore.create(tmp_path / "t", extractor.spec())
    summary = run_extraction(table, extractor, store, batch_size=3, progress=False)
    assert summary.extracted == 2 and list(summary.failed) == ["s1"] and "boom" in summary.failed["s1"]
    assert store.segment_ids() == ["s0", "s2"]


def test_cli_choices_defaults_and_exit_code(media, tiny_models, tmp_path, monkeypatch, capsys):
    assert choice.resolve_extractor_choice("prosody", "a") == ("prosody", {})
    assert choice.resolve_extractor_choice("minilm", "t") == ("hf_text", {"model": "minilm"})
    with pytest.raises(ValueError, match="not text"):
        choice.resolve_extractor_choice("logmel", "t")
    (audio,) = choice.choose_extractors(audio=str(tiny_models["hubert"]), vision="none", audio_layers="2",
                                        chunk_seconds=4.0, device="cpu")
    assert audio.name == "hf_audio" and audio.config.layers == 2 and audio.config.chunk_seconds == 4.0
    assert choice.OFFLINE_DEFAULTS["v"] in list_extractors()  # the offline vision default is always there
    monkeypatch.setattr(choice, "OFFLINE_DEFAULTS",
                        {"a": "prosody", "t": str(tiny_models["bert"]), "v": str(tiny_models["vit"])})
    defaults = choice.choose_extractors()
    assert [e.name for e in defaults] == ["prosody", "hf_text", "hf_vision"]
    with pytest.raises(ValueError, match="nothing to extract"):
        choice.choose_extractors(audio="none", text="NONE")
    broken = write_clip_manifest(tmp_path / "broken.csv", media, ["zero_bytes", "not_media"])
    assert main(["extract", "--manifest", str(broken), "--out", str(tmp_path / "o"), "--audio", "logmel",
                 "--no-progress"]) == 1


def test_extract_function_typed_call(media, tiny_models, tmp_path):
    """The library call under `affectflow extract`: typed options, summaries keyed by extractor id."""
    manifest = write_clip_manifest(tmp_path / "clips.csv", media, ["talking_face", "no_audio"])
    seen = []
    summaries = extract(manifest, tmp_path / "features", audio="logmel", text="none",
                        vision=str(tiny_models["vit"]), face_fps=4.0, workers=0, export_npy="frame",
                        progress=False, on_summary=seen.append)
    stores = open_stores(tmp_path / "features")
    assert sorted(summaries) == sorted(store.extractor_id for store in stores.values())
    assert [summary.extractor_id for summary in seen] == list(summaries)
    assert all(summary.extracted == 2 and not summary.failed for summary in summaries.values())
    assert stores["a"].missing_reason("no_audio") == "no audio stream"
    for summary in summaries.values():
        assert summary.npy_dir == tmp_path / "features" / "npy-frame" / summary.extractor_id
        assert summary.npy_files >= 2 and summary.npy_dir.is_dir()

    from affectflow.pipeline.core.manifest import read_manifest

    again = extract(read_manifest(manifest), tmp_path / "features", audio="logmel", progress=False)
    (summary,) = again.values()
    assert summary.skipped == 2 and summary.extracted == 0 and summary.extractor_id == stores["a"].extractor_id
    with pytest.raises(ValueError, match="engine"):
        extract(manifest, tmp_path / "x", audio="logmel", engine="spark")


@pytest.mark.parametrize("damage", ["truncate", "empty", "nan_tail"])
def test_a_corrupt_stored_file_is_extracted_again(tmp_path, damage):
    """Issue 16 D5: `extract` re-extracts a damaged segment file instead of calling it already stored."""
    table = manifest_from_segments([Segment(id=f"s{i}", media_path="unused.mp4", text="fine") for i in range(3)])
    extractor = FragileExtractor(_FragileConfig())
    store = FeatureStore.create(tmp_path / "t", extractor.spec())
    assert run_extraction(table, extractor, store, progress=False).extracted == 3
    path = store.segments_dir / "s1.safetensors"
    data = path.read_bytes()
    path.write_bytes({"truncate": data[:-5], "empty": b"", "nan_tail": data[:-8] + b"\xff" * 8}[damage])
    summary = run_extraction(table, extractor, store, progress=False)
    assert summary.extracted == 1 and summary.skipped == 2
    assert store.usable_segment_ids() == ["s0", "s1", "s2"]
    store.verify("s1")


def test_a_bad_span_in_a_hand_written_manifest_fails_that_segment_only(media, tmp_path, capsys):
    """Issue 16 D6: inf / NaN / negative / reversed spans are per-segment failures naming the segment,
    never an OverflowError or ValueError that stops the job."""
    clip = media["talking_face"]
    bad = {"inf_start": ("inf", ""), "inf_end": ("0", "inf"), "inf_both": ("inf", "inf"), "negative": ("-3", "1"),
           "reversed": ("0.8", "0.2"), "empty_start": ("", "1")}
    lines = ["segment_id,media_path,start,end", f"good,{clip},0,1"]
    lines += [f"{name},{clip},{start},{end}" for name, (start, end) in bad.items()]
    manifest = tmp_path / "hand.csv"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "features"
    assert main(["extract", "--manifest", str(manifest), "--out", str(out), "--audio", "logmel", "--text", "none",
                 "--vision", "none", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    (store,) = open_stores(out).values()
    assert store.segment_ids() == ["good"]
    logged = {json.loads(line)["segment_id"]: json.loads(line)["reason"]
              for line in (store.root / "failures.jsonl").read_text().splitlines()}
    assert sorted(logged) == sorted(bad) and all("span" in reason for reason in logged.values())
    assert "extracted 1" in printed and f"failed {len(bad)}" in printed and "inf_start" in printed
    (summary,) = extract(manifest, tmp_path / "features", audio="logmel", progress=False).values()
    assert summary.skipped == 1 and sorted(summary.failed) == sorted(bad)  # a re-run says the same
