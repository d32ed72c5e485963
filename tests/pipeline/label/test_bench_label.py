"""scripts/bench_label.py's default mode: the realistic clip set (bench_clips.py) at a tiny size, and the
launch-to-exit measurement (bench_cli.py) of a fake CLI; no timed assertions (only lower bounds that the
fake command's own sleeps guarantee)."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"
RAVDESS = Path(__file__).resolve().parents[4] / "shared" / "data" / "ravdess-speech"  # used when present


@pytest.fixture(scope="module")
def scripts():
    """The bench modules, imported as `bench_label.py` imports them (scripts/ on sys.path)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(SCRIPTS))
        yield {name: importlib.import_module(name) for name in ("bench_clips", "bench_cli", "bench_label")}


@pytest.fixture(scope="module")
def tiny_set(scripts, tmp_path_factory):
    """Three clips of 2-2.5 s at 640x360: the face that leaves, the clip without speech, the sidecar clip."""
    clips = scripts["bench_clips"]
    specs = clips.plan_clip_set(total_seconds=5.0, seed=0, ravdess=RAVDESS, min_seconds=2.0, max_seconds=2.5,
                                sizes=((640, 360),))
    folder = tmp_path_factory.mktemp("clip-set")
    return specs, folder, clips.make_clip_set(folder, specs)


def test_the_tiny_clip_set_has_its_kinds_lengths_sizes_and_sidecar(scripts, tiny_set):
    from affectflow.pipeline.media.decode import probe
    from affectflow.pipeline.media.transcripts import find_sidecar, read_transcript_file

    specs, folder, paths = tiny_set
    assert [spec.kind for spec in specs] == ["face-leaves", "no-speech", "sidecar"]
    for spec, path in zip(specs, paths):
        recording = probe(path)
        assert recording.has_video and recording.has_audio
        assert abs(recording.duration - spec.seconds) <= 0.1, (path, recording.duration)  # AAC frames: 21 ms
        assert 2.0 <= spec.seconds <= 2.5
    assert [find_sidecar(path) is not None for path in paths] == [False, False, True]
    sidecar = read_transcript_file(find_sidecar(paths[2])).text
    sentences = [piece[2] for piece in specs[2].speech]
    assert sidecar in [" ".join(sentences[:count]) for count in range(1, len(sentences) + 1)]  # what is spoken
    again = scripts["bench_clips"].make_clip_set(folder, specs)  # reused, not rewritten
    assert [p.stat().st_mtime_ns for p in again] == [p.stat().st_mtime_ns for p in paths]


def test_the_face_leaves_at_half_the_clip(tiny_set):
    from affectflow.pipeline.media.faces import FaceDetector, track_faces

    specs, _, paths = tiny_set
    half = specs[0].seconds / 2
    track = track_faces(paths[0], FaceDetector(crop_size=112), fps=10.0)
    before, after = track.mask[track.times < half - 0.5], track.mask[track.times >= half]
    assert before.size and after.size
    assert before.mean() >= 0.5  # the face is in the frame (a face of ~100 px: MTCNN finds most frames)
    assert not after.any()  # the face has left: nothing to find


def test_speech_is_heard_where_spoken_and_not_in_the_no_speech_clip(tiny_set):
    from affectflow.pipeline.media.decode import read_audio
    from affectflow.pipeline.media.transcripts import speech_seconds

    specs, _, paths = tiny_set
    heard = [speech_seconds(read_audio(path).samples) for path in paths]
    assert heard[1] < 0.25 * specs[1].seconds  # chord melody, silence, noise: not speech
    assert heard[2] > 0.25 * specs[2].seconds  # espeak sentences with pauses


def test_batches_are_seeded_cover_each_kind_and_link_their_sidecars(scripts, tiny_set, tmp_path):
    clips = scripts["bench_clips"]
    specs, folder, _ = tiny_set
    batch = clips.draw_batch(specs, 5.0, seed=3)
    assert batch == clips.draw_batch(specs, 5.0, seed=3)
    assert sum(spec.seconds for spec in batch) <= 5.0 * 1.05
    assert len({spec.kind for spec in batch}) == len(batch)  # one of each kind first
    linked = clips.link_batch(folder, batch, tmp_path / "batch")
    names = sorted(path.name for path in linked.iterdir())
    expected = sorted([f"{spec.name}.mp4" for spec in batch] + [f"{spec.name}.txt" for spec in batch
                                                                if spec.kind == "sidecar"])
    assert names == expected


FAKE_CLI = textwrap.dedent("""
    import sys, time
    out = sys.argv[1]
    with open(out, "w") as f:
        f.write("clip,label,error\\n")
    time.sleep(0.2)
    with open(out, "a") as f:
        f.write("a.mp4,joy,\\n")
    time.sleep(0.2)
    print("1 labelled, 0 with errors, 2 already done -> " + out + " (0.4 s)")
    sys.exit(int(sys.argv[2]))
""")


def test_measure_command_times_the_first_row_and_parses_the_summary(scripts, tmp_path):
    cli = scripts["bench_cli"]
    out = tmp_path / "labels.csv"
    run = cli.measure_command([sys.executable, "-c", FAKE_CLI, str(out), "0"], out)
    assert run.exit_code == 0
    assert run.first_row is not None and 0.2 <= run.first_row <= run.wall  # written after a 0.2 s sleep
    assert run.wall >= 0.4
    assert run.summary == {"labelled": 1, "errors": 0, "done": 2, "seconds": 0.4}
    assert run.peak_mib > 0 and run.cpu >= 0

    again = cli.measure_command([sys.executable, "-c", FAKE_CLI, str(out), "3"], out, memory=False)
    assert again.exit_code == 3
    assert again.first_row is None  # the file had its rows at launch: no first row to time
    assert again.peak_mib == 0 and again.summary == run.summary  # a timing run reads no PSS (it slows the command)


def test_rows_count_only_once_their_line_ends(scripts, tmp_path):
    cli = scripts["bench_cli"]
    path = tmp_path / "labels.csv"
    path.write_text('clip,text\n"a.mp4","two\nlines')
    assert not cli.first_row_seen(path)  # the row is being written
    path.write_text('clip,text\n"a.mp4","two\nlines"\n')
    assert cli.first_row_seen(path)
    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text('{"clip": "a.mp4"')
    assert not cli.first_row_seen(jsonl)
    jsonl.write_text('{"clip": "a.mp4"}\n')
    assert cli.first_row_seen(jsonl)
    assert cli.parse_summary("warning: x\n") is None


def test_the_table_shows_each_tree_the_ratio_and_the_targets(scripts, capsys):
    bench = scripts["bench_label"]
    clips, cli = scripts["bench_clips"], scripts["bench_cli"]
    summary = clips.ClipSetSummary(clips=3, seconds=60.0)

    def run(wall, first_row, peak):
        return cli.CommandRun(0, wall, first_row, peak, 2 * wall, None, "", "")

    runs = {("baseline x", "60"): [run(12.0, 5.0, 900.0), run(10.0, 6.0, 1000.0)],
            ("this y", "60"): [run(6.0, 3.0, 800.0)],
            ("baseline x", "nothing"): [run(1.0, None, 50.0)], ("this y", "nothing"): [run(0.5, None, 40.0)]}
    bench.print_user_table([("baseline x", {}), ("this y", {})], [(60.0, Path("b"), summary)], runs, 2)
    lines = {line.split("  ")[0]: line.split() for line in capsys.readouterr().out.splitlines() if line}
    assert lines["1-min batch (3 clips, 60 s): x real time"][-5:] == ["6.00x", "10.00x", "1.67x", ">=", "8"]
    assert lines["1-min batch (3 clips, 60 s): first row (s)"][-5:] == ["5.00", "3.00", "0.60x", "<=", "6"]
    assert lines["1-min batch (3 clips, 60 s): peak PSS (MiB, tree)"][-3:] == ["1000.00", "800.00", "0.80x"]
    assert lines["nothing to do: exit (s)"][-5:] == ["1.00", "0.50", "0.50x", "<=", "2"]


def test_memory_ratios_are_over_the_first_clip_count(scripts):
    memory = importlib.import_module("bench_memory")
    ratios = memory.peak_ratios({100: {"p": 1000.0}, 1000: {"p": 1050.0}}, "p")
    assert ratios == {100: 1.0, 1000: pytest.approx(1050.0 / 1000.0)}
