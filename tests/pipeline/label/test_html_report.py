"""The HTML report of a labelled batch (`label(..., report=...)`, `--report`), rendered in a real headless Chromium.

Chromium is installed by scripts/setup.sh; without it these tests fail (never skip) and say so.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from affectflow.pipeline.cli.label import configure
from affectflow.pipeline.label import label
from affectflow.pipeline.label.default_model import CLASSES
from affectflow.pipeline.label.html_report import TIMELINE_POINTS, clip_views, write_html_report
from affectflow.pipeline.label.output import ResumableRowWriter, escape_clip, read_labels
from affectflow.pipeline.label.run import output_columns
from affectflow.pipeline.label.thumbnails import save_thumbnails, thumbnail_folder, thumbnail_path
from factories.media import face_image, make_video

CLASS_NAMES = ("neutral", "joy", "sadness")
BROKEN = "broken.mp4"
BROKEN_ERROR = "cannot decode broken.mp4: moov atom not found <&>"
HOSTILE = "<script>alert(1)</script> & \"quoted\".mp4"  # must stay text, never markup
NOT_UTF8 = "caf\udce9.mp4"  # the Latin-1 byte 0xE9 in a file name: written caf\xe9.mp4
CHROMIUM_SECONDS = 120


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: run scripts/setup.sh (it installs Debian's chromium package)")
    return path


def run_chromium(page: Path, tmp_path: Path, *arguments: str, fragment: str = "") -> subprocess.CompletedProcess:
    """Chromium headless on `page` (file://, plus `#fragment`), its own profile folder, console logged to stderr."""
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
               *arguments, page.resolve().as_uri() + (f"#{fragment}" if fragment else "")]
    return subprocess.run(command, capture_output=True, text=True, timeout=CHROMIUM_SECONDS, check=True)


def dump_dom(page: Path, tmp_path: Path, fragment: str = "") -> tuple[str, str]:
    """(the DOM after the page's scripts ran, Chromium's stderr)."""
    result = run_chromium(page, tmp_path, "--dump-dom", fragment=fragment)
    return result.stdout, result.stderr


def console_errors(stderr: str) -> list[str]:
    """Chromium's log lines of uncaught errors and console messages (the report logs none)."""
    return [line for line in stderr.splitlines() if "Uncaught" in line or ":CONSOLE" in line]


class Elements(HTMLParser):
    """Every start tag with its attributes (values unescaped), and the text inside each `data-clip` section."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.section_text: dict[str, str] = {}
        self._section: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "section" and "data-clip" in attributes:
            self._section = attributes["data-clip"]
            self.section_text[self._section] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._section is not None:
            self.section_text[self._section] += data

    def with_clip(self, tag: str) -> dict[str, dict[str, str | None]]:
        return {a["data-clip"]: a for t, a in self.tags if t == tag and "data-clip" in a}

    def root(self) -> dict[str, str | None]:
        return next(a for t, a in self.tags if t == "html")


TEXT_COUNTED = {0: {"text_reliable": True, "text_weight": 0.0},
                2: {"text_reliable": False, "text_unreliable_reason": "low ASR confidence (avg_logprob -1.40 < -0.8)"},
                3: {"text_reliable": True, "text_weight": 0.5}}
"""How far the transcript counted, by clip index (JSONL `text_reliable`, `text_weight`; the others: fully)."""


def write_batch(out: Path, file_format: str = "jsonl") -> dict[str, str]:
    """A labels file written through the public writer, plus thumbnails in its cache: clip -> label ('' = failed)."""
    rng = np.random.default_rng(7)
    columns = output_columns(CLASS_NAMES, ("a", "t", "v"), file_format == "jsonl")
    faces = np.stack([np.asarray(Image.fromarray(face_image()).resize((112, 112)))] * 5)
    labels = {}
    with ResumableRowWriter(out, columns, file_format) as writer:
        for index, clip in enumerate(["talking.mp4", "nested/quiet.mp4", HOSTILE, NOT_UTF8, BROKEN]):
            if clip == BROKEN:
                writer.append_clip(clip, [{"clip": clip, "label": None, "error": BROKEN_ERROR}])
                labels[clip] = ""
                continue
            probs = np.roll([0.7 - 0.05 * index, 0.2 + 0.05 * index, 0.1], index)  # labels and confidences differ
            label_name = CLASS_NAMES[int(np.argmax(probs))]
            windows = [{"clip": clip, "label": label_name, "window_start": s, "window_end": s + 1.0,
                        **{f"prob_{c}": p for c, p in zip(CLASS_NAMES, rng.dirichlet(np.ones(3)))}} for s in range(3)]
            row = {"clip": clip, "label": label_name, **{f"prob_{c}": p for c, p in zip(CLASS_NAMES, probs)},
                   "has_audio": True, "has_text": True, "has_vision": index != 1, "duration_s": 3.0,
                   "transcript_source": "asr", "transcript": f"words of clip {index} <i>not markup</i>", "error": "",
                   **TEXT_COUNTED.get(index, {})}
            for modality in ("audio", "text") + (("vision",) if index != 1 else ()):
                row.update({f"prob_{modality}_{c}": p for c, p in zip(CLASS_NAMES, rng.dirichlet(np.ones(3)))})
            writer.append_clip(clip, windows + [row])
            save_thumbnails(thumbnail_folder(out), clip, faces if index != 1 else None)
            labels[clip] = label_name
    return labels


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(the report of a written batch, clip -> label)."""
    folder = tmp_path_factory.mktemp("html_report")
    labels = write_batch(folder / "labels.jsonl")
    return write_html_report(folder / "labels.jsonl", folder / "report.html"), labels


def test_every_clip_has_a_summary_row_and_a_section_after_the_scripts_ran(batch, tmp_path):
    report, labels = batch
    dom, stderr = dump_dom(report, tmp_path)
    page = Elements(dom)
    expected = {escape_clip(clip) for clip in labels}  # as the labels file writes them
    assert set(page.with_clip("tr")) == expected
    assert set(page.with_clip("section")) == expected
    assert page.root().get("data-report-state") == "ready", page.root().get("data-report-error")
    assert console_errors(stderr) == []
    assert sum(tag == "script" for tag, _ in page.tags) == 1  # the hostile clip name stayed text
    assert "caf\\xe9.mp4" in page.with_clip("section")
    faces = [a for t, a in page.tags if t == "img"]
    assert len(faces) == sum(clip not in (BROKEN, "nested/quiet.mp4") for clip in labels)  # none without a face


def test_the_error_of_a_broken_file_is_shown(batch, tmp_path):
    report, _ = batch
    page = Elements(dump_dom(report, tmp_path)[0])
    assert BROKEN_ERROR in page.section_text[BROKEN]
    assert page.with_clip("section")[BROKEN]["data-error"] == "yes"
    assert BROKEN_ERROR in html.unescape(re.search(r'<tr data-clip="broken.mp4".*?</tr>', report.read_text(),
                                                   re.S).group())


def test_each_section_says_how_far_its_transcript_counted(batch, tmp_path):
    # issue 24: the rows and the report say when the text was left out and why
    report, _ = batch
    page = Elements(dump_dom(report, tmp_path)[0])
    assert "weight 0: its words carry no emotion" in page.section_text["talking.mp4"]
    assert "not used: low ASR confidence (avg_logprob -1.40 < -0.8)" in page.section_text[HOSTILE]
    assert "weight 0.50" in page.section_text[escape_clip(NOT_UTF8)]
    assert "weight" not in page.section_text["nested/quiet.mp4"] and "not used" not in page.section_text["nested/quiet.mp4"]


@pytest.mark.parametrize("fragment", ["label=joy", "error=yes"])
def test_filtering_from_the_url_hides_the_other_rows_and_sections(batch, tmp_path, fragment):
    report, labels = batch
    key, value = fragment.split("=")
    page = Elements(dump_dom(report, tmp_path, fragment=fragment)[0])
    wanted = {escape_clip(c) for c, name in labels.items() if (name == value if key == "label" else not name)}
    assert wanted and len(wanted) < len(labels)  # the filter has something to show and something to hide
    for tag in ("tr", "section"):
        shown = {clip for clip, attributes in page.with_clip(tag).items() if "hidden" not in attributes}
        assert shown == wanted, tag


def test_sorting_from_the_url_orders_the_summary_rows(batch, tmp_path):
    report, labels = batch
    rows = {row["clip"]: row for row in read_labels(report.with_name("labels.jsonl")) if row["window_start"] is None}
    confidence = {clip: row[f"prob_{row['label']}"] if row["label"] else -1.0 for clip, row in rows.items()}
    page = Elements(dump_dom(report, tmp_path, fragment="sort=confidence")[0])
    shown = [clip for clip in page.with_clip("tr")]  # dicts keep the DOM's order
    assert shown == [escape_clip(c) for c in sorted(confidence, key=confidence.get)]
    assert shown != [escape_clip(c) for c in labels]  # the file's order is another one
    descending = Elements(dump_dom(report, tmp_path, fragment="sort=-confidence")[0])
    assert list(descending.with_clip("tr")) == shown[::-1]


def test_the_screenshot_is_not_blank(batch, tmp_path):
    report, _ = batch
    png = tmp_path / "report.png"
    run_chromium(report, tmp_path, "--hide-scrollbars", "--window-size=1000,900", f"--screenshot={png}")
    pixels = np.asarray(Image.open(png).convert("L"), dtype=np.float64)
    assert pixels.shape == (900, 1000)
    # a blank page is one grey level (standard deviation 0); text, bars and faces spread it by tens of levels
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.01


def test_the_page_references_nothing_outside_itself(batch, tmp_path):
    report, _ = batch
    for text in (report.read_text(encoding="utf-8"), dump_dom(report, tmp_path)[0]):
        page = Elements(text)
        links = [value for _, attributes in page.tags for name, value in attributes.items()
                 if name in ("src", "href", "srcset", "action", "poster", "data") and value is not None]
        assert links and all(v.startswith(("data:", "#")) for v in links), links
        assert not re.search(r"url\((?!['\"]?data:)|@import|<link\b|<iframe\b", text, re.I)


def test_a_csv_batch_reports_the_fused_posteriors_and_says_where_per_modality_ones_are(tmp_path):
    labels = write_batch(tmp_path / "labels.csv", "csv")
    report = write_html_report(tmp_path / "labels.csv", tmp_path / "labels.html")
    page = Elements(report.read_text(encoding="utf-8"))
    assert set(page.with_clip("section")) == {escape_clip(c) for c in labels}
    assert "Per-modality posteriors are written to JSONL labels files only" in report.read_text(encoding="utf-8")
    assert len([a for t, a in page.tags if t == "svg" and a.get("class") == "posteriors"]) == len(labels) - 1


def test_a_long_timeline_is_averaged_into_a_bounded_number_of_points():
    """An hour of 1 s windows draws at most TIMELINE_POINTS points per class, each the mean of its windows."""
    windows = [{"clip": "long.mp4", "label": "joy", "window_start": float(s), "window_end": s + 1.0,
                "prob_neutral": 0.25, "prob_joy": 0.5 + 0.25 * (-1) ** s, "prob_sadness": None} for s in range(3600)]
    file_row = {"clip": "long.mp4", "label": "joy", "prob_neutral": 0.2, "prob_joy": 0.7, "prob_sadness": 0.1,
                "duration_s": 3600.0, "window_start": None}
    timeline = clip_views(windows + [file_row], CLASS_NAMES, None)[0].timeline
    lines = {line["name"]: line["runs"] for line in timeline["lines"]}
    assert lines["sadness"] == [] and timeline["counts"] == [("joy", 3600)]
    points = [point.split(",") for point in lines["joy"][0].split()]
    assert len(lines["joy"]) == 1 and len(points) == TIMELINE_POINTS
    # 3600 windows in 240 groups of 15: the alternating 0.75/0.25 averages to 0.5 +- 0.25/15 (1 unit = 0.01)
    assert all(abs(float(y) - lines_y(0.5)) <= 0.25 / 15 * 100 + 0.1 for _, y in points)


def lines_y(probability: float) -> float:
    """The timeline's y of a probability (120-unit plot, 10-unit margins: y = 10 + (1 - p) * 100)."""
    return 10 + (1 - probability) * 100


def test_the_report_flag_reaches_label():
    parser = argparse.ArgumentParser()
    configure(parser)
    assert parser.parse_args(["--videos", "v", "--report", "out/report.html"]).report == "out/report.html"
    assert parser.parse_args(["--videos", "v"]).report is None


def test_label_writes_a_report_of_every_clip_also_after_a_resume(tmp_path):
    """End to end with the offline default model: a resumed run's report still shows the first run's clips
    and their faces (the thumbnail cache), and the new clip."""
    folder = tmp_path / "clips"
    make_video(folder / "face.mp4", seconds=1.0, audio=None)
    (folder / BROKEN).write_bytes(b"")
    out, report = tmp_path / "labels.jsonl", tmp_path / "report.html"
    transcripts = {"face.mp4": "I am so happy, what a wonderful day!"}
    options = dict(transcripts=transcripts, device="cpu", asr=False, progress=False, workers=0, segment_seconds=0.5)
    first = label(folder, out, report=report, **options)
    assert first.report == report and (first.labeled, first.failed) == (1, 1)
    assert thumbnail_path(thumbnail_folder(out), "face.mp4").is_file()
    make_video(folder / "scene.mp4", seconds=1.0, face=False, audio=None)  # no face, no audio: an error row
    second = label(folder, out, report=report, **options)
    assert second.skipped == 1  # face.mp4 was not labelled again
    dom, stderr = dump_dom(report, tmp_path)
    page = Elements(dom)
    rows = {row["clip"]: row for row in read_labels(out) if row["window_start"] is None}
    assert set(page.with_clip("tr")) == set(page.with_clip("section")) == set(rows) == {"face.mp4", BROKEN,
                                                                                       "scene.mp4"}
    assert page.root().get("data-report-state") == "ready" and console_errors(stderr) == []
    face_section = page.section_text["face.mp4"]
    assert rows["face.mp4"]["label"] in CLASSES and rows["face.mp4"]["label"] in face_section
    assert sum(t == "img" for t, _ in page.tags) == 1  # face.mp4's thumbnails, from the first run
    assert sum(t == "svg" and a.get("class") == "timeline" for t, a in page.tags) == 1  # face.mp4's windows
    for clip in (BROKEN, "scene.mp4"):
        assert rows[clip]["error"] and rows[clip]["error"] in page.section_text[clip]
