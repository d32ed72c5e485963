"""The README is run, not just read: every command of its ```bash blocks and every ```python block is executed
in order, in a sandbox laid out like the README assumes, at smoke scale; the docs' command lines parse against
the real `affectflow` parser; every relative link (and #anchor) in README.md and docs/*.md resolves.

The sandbox (one per module run, reused by every README block in document order):

    <tmp>/affectflow/            the working directory: the README's "repository root"
        scripts -> <repo>/scripts
        clips/                   generated media (tests/factories/media.py): a talking face with espeak-ng
                                 speech, a clip without a face, a speech WAV, a zero-byte .mp4
    <tmp>/shared/data/           what the README calls ../shared/data: a small slice of the real folder
        meld/                    the first 80 / 30 / 30 rows of the real train / dev / test annotation CSVs
        cmu-mosi-features/, cmu-mosi/   the real folders, symlinked (11 MB: imported whole in seconds)

Files the README's earlier blocks write (prepared/..., features/..., runs/...) are what later blocks read.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from affectflow.pipeline.cli.main import COMMANDS, build_parser

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
README_PATH = REPO_ROOT / "README.md"
README = README_PATH.read_text(encoding="utf-8")
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))

# ---------------------------------------------------------------------------------------------------------
# The substitution table: the only ways a README command is changed before it runs. Everything else (the
# subcommand, its options, its paths) runs exactly as written, so a README example that changes or breaks
# fails this test.
# ---------------------------------------------------------------------------------------------------------
NOT_RUN: dict[str, str] = {
    "bash scripts/setup.sh": "installs apt packages and creates the .venv this test already runs in "
                             "(checked instead: the script exists and `bash -n` parses it)",
    "bash scripts/test.sh": "runs the whole test suite, this test included "
                            "(checked instead: the script exists and `bash -n` parses it)",
}
"""Command lines that are not executed, and why."""

SMALLER_VALUES: dict[str, str] = {
    "--epochs": "1",  # the README trains 20-30 epochs; one shows the command works
}
"""Option -> the value it runs with here."""

SMALLER_FLAGS: dict[str, tuple[str, ...]] = {
    "train": ("--tiny", "--no-progress"),  # the model's tiny_config(): DQF at full size is 17.4 M parameters
    "extract": ("--no-progress",),
    "evaluate": ("--no-progress",),
}
"""`affectflow` subcommand -> flags appended to it."""

MELD_ROWS = {"train": 80, "dev": 30, "test": 30}
"""The MELD slice behind ../shared/data/meld (the real CSVs have 9,989 / 1,109 / 2,610 rows)."""


def fenced_blocks(text: str, language: str) -> list[str]:
    """The bodies of the ```<language> blocks of a Markdown text, in order."""
    return [body for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S) if lang == language]


def ordered_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every bash and python block, in document order."""
    return [(lang, body) for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)
            if lang in ("bash", "python")]


def command_lines(block: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            commands.append(shlex.join(words))
    return commands


def to_argv(command: str) -> list[str] | None:
    """The argv a README command runs with here (substitutions applied), or None for a NOT_RUN line."""
    if command in NOT_RUN:
        return None
    words = shlex.split(command)
    program = words[0].removeprefix(".venv/bin/")
    if program == "affectflow":
        head, args = [sys.executable, "-m", "affectflow.pipeline.cli.main"], words[1:]
        subcommand = args[0] if args else ""
    elif program == "python" and len(words) > 1 and words[1].startswith("scripts/"):
        head, args = [sys.executable, words[1]], words[2:]
        subcommand = "label" if words[1] == "scripts/run_pipeline.py" else ""
    else:
        raise AssertionError(f"README command {command!r} has no runner in tests/test_readme.py: "
                             "add it to the substitution table or to NOT_RUN with the reason")
    args = [SMALLER_VALUES[args[i - 1]] if i and args[i - 1] in SMALLER_VALUES else word
            for i, word in enumerate(args)]
    return [*head, *args, *SMALLER_FLAGS.get(subcommand, ())]


def out_argument(command: str) -> str | None:
    words = shlex.split(command)
    return words[words.index("--out") + 1] if "--out" in words[:-1] else None


@dataclass
class Step:
    block: int
    command: str
    returncode: int
    output: str


def _make_sandbox(root: Path, shared_data: Path | None) -> Path:
    from factories.media import make_video, write_speech

    work = root / "affectflow"
    (work / "clips").mkdir(parents=True)
    (work / "scripts").symlink_to(REPO_ROOT / "scripts")
    make_video(work / "clips" / "talking.mp4", seconds=2.0, text="I am so happy to see you, this is wonderful.")
    make_video(work / "clips" / "no_face.mp4", seconds=2.0, face=False, text="This is terrible and I hate it.")
    write_speech(work / "clips" / "voice.wav", "What a lovely surprise.", seconds=2.0)
    (work / "clips" / "broken.mp4").write_bytes(b"")

    if shared_data is None:
        return work
    data = root / "shared" / "data"
    data.mkdir(parents=True)
    for name in ("cmu-mosi-features", "cmu-mosi"):
        (data / name).symlink_to(shared_data / name)
    (data / "meld").mkdir()
    for split, rows in MELD_ROWS.items():
        name = f"{split}_sent_emo.csv"
        table = pd.read_csv(shared_data / "meld" / name, dtype=str, keep_default_na=False, encoding="utf-8")
        table.head(rows).to_csv(data / "meld" / name, index=False)
    return work


def _needs_shared_data(body: str) -> bool:
    return "../shared/data" in body


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory) -> tuple[Path, list[Step]]:
    """Every README block run once, in order, in the sandbox (a failing command does not stop the others).
    Without ../shared/data beside the repository, the blocks that read it are not run (their tests skip)."""
    work = _make_sandbox(tmp_path_factory.mktemp("readme"), SHARED_DATA if SHARED_DATA.is_dir() else None)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    steps = []
    for index, (language, body) in enumerate(ordered_blocks(README)):
        if _needs_shared_data(body) and not SHARED_DATA.is_dir():
            continue
        if language == "python":
            result = subprocess.run([sys.executable, "-c", body], cwd=work, env=env, capture_output=True, text=True)
            steps.append(Step(index, "python block", result.returncode, result.stdout + result.stderr))
            continue
        for command in command_lines(body):
            argv = to_argv(command)
            if argv is None:
                continue
            result = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True)
            steps.append(Step(index, command, result.returncode, result.stdout + result.stderr))
    return work, steps


README_BLOCKS = ordered_blocks(README)


@pytest.mark.parametrize("index", range(len(README_BLOCKS)),
                         ids=[f"block{i}-{lang}" for i, (lang, _) in enumerate(README_BLOCKS)])
@pytest.mark.slow
def test_readme_block_runs(readme_run, index):
    work, steps = readme_run
    language, body = README_BLOCKS[index]
    if _needs_shared_data(body) and not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (../shared/data beside the repo)")
    ran = [step for step in steps if step.block == index]
    failed = [f"{step.command}\n  exit {step.returncode}: {step.output[-1500:]}" for step in ran if step.returncode]
    assert not failed, "README command failed:\n" + "\n".join(failed)
    for step in ran:
        out = out_argument(step.command) if step.command != "python block" else None
        assert out is None or (work / out).exists(), f"{step.command!r} exited 0 but wrote no {out}"
    if language == "bash" and all(to_argv(c) is None for c in command_lines(body)):
        for command in command_lines(body):
            script = REPO_ROOT / shlex.split(command)[1]
            assert script.is_file(), f"README names {script.name}, which does not exist"
            check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
            assert check.returncode == 0, f"{script.name}: {check.stderr}"


def _labelling_commands() -> list[str]:
    return [c for lang, body in README_BLOCKS if lang == "bash" for c in command_lines(body)
            if ("run_pipeline.py" in c or c.startswith("affectflow label")) and "--out" in c]


@pytest.mark.slow
def test_labelling_writes_one_row_per_file_and_resumes(readme_run):
    """The README's contract on its own first labelling command: one row per input file (the broken one with
    its error); running the same command again keeps every finished row and adds none."""
    work, _ = readme_run
    first = _labelling_commands()[0]
    before = pd.read_csv(work / out_argument(first))
    files = sorted(p.name for p in (work / "clips").iterdir() if p.is_file())
    assert sorted(before["clip"]) == files
    assert before.set_index("clip")["error"].isna().to_dict() == {name: name != "broken.mp4" for name in files}
    again = subprocess.run(to_argv(first), cwd=work, capture_output=True, text=True,
                           env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert again.returncode == 0, again.stderr[-1500:]
    after = pd.read_csv(work / out_argument(first))
    finished = before[before["error"].isna()]
    pd.testing.assert_frame_equal(after[after["clip"].isin(finished["clip"])].reset_index(drop=True),
                                  finished.reset_index(drop=True))
    assert sorted(after["clip"]) == files


@pytest.mark.slow
def test_timeline_and_plots(readme_run):
    """`--segment-seconds` adds window rows after each file row; `--plot` writes one PNG per clip."""
    work, _ = readme_run
    command = next(c for c in _labelling_commands() if "--segment-seconds" in c and "--plot" in c)
    out = work / out_argument(command)
    rows = pd.read_json(out, lines=True)
    windows = rows[rows["window_start"].notna()]
    assert len(windows) > 0 and set(windows["clip"]) <= set(rows.loc[rows["window_start"].isna(), "clip"])
    assert any(out.with_name(out.name + ".plots").glob("*.png"))
    if "--report" in command:  # the page has one summary row and one section per labelled file
        page = (work / shlex.split(command)[shlex.split(command).index("--report") + 1]).read_text(encoding="utf-8")
        for clip in set(rows["clip"]):
            for tag in ("tr", "section"):
                assert re.search(rf'<{tag}\b[^>]*\bdata-clip="{re.escape(clip)}"', page), (tag, clip)


def test_every_readme_command_has_a_runner():
    commands = [c for lang, body in README_BLOCKS if lang == "bash" for c in command_lines(body)]
    assert len(commands) >= 8
    for command in commands:
        to_argv(command)  # raises for a command the substitution table does not cover
    assert set(NOT_RUN) <= set(commands), "NOT_RUN lists a command the README no longer has"


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_doc_commands_parse(doc):
    """Each `affectflow SUB ...` line of a doc's bash blocks is accepted by the real parser; scripts exist."""
    for block in fenced_blocks(doc.read_text(encoding="utf-8"), "bash"):
        for command in command_lines(block):
            words = shlex.split(command)
            if words[0] == "nice":  # `nice -n 10 python ...`
                words = words[3:] if words[1] == "-n" else words[1:]
            program = words[0].removeprefix(".venv/bin/")
            if program == "affectflow":
                assert words[1] in COMMANDS, f"{doc.name}: unknown subcommand in {command!r}"
                try:
                    build_parser(words[1]).parse_args(words[1:])
                except SystemExit as exit_:
                    raise AssertionError(f"{doc.name}: {command!r} is refused by the parser") from exit_
            elif program == "python":
                assert (REPO_ROOT / words[1]).is_file(), f"{doc.name}: {words[1]} does not exist"
            else:
                raise AssertionError(f"{doc.name}: {command!r}: not an affectflow or scripts/ command")


# ---------------------------------------------------------------------------------------------------------
# Links, the stage table, the library names
# ---------------------------------------------------------------------------------------------------------
def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def _links(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    return [link for link in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in link]


@pytest.mark.parametrize("page", [README_PATH, *DOCS], ids=["README.md", *(d.name for d in DOCS)])
def test_every_relative_link_and_anchor_exists(page):
    broken = []
    for link in _links(page):
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(link)
        elif anchor and (path.suffix != ".md" or anchor not in _anchors(path)):
            broken.append(link)
    assert not broken, f"{page.name}: broken links {broken}"


def test_readme_links_every_doc_and_the_stage_modules():
    links = _links(README_PATH)
    assert {f"docs/{doc.name}" for doc in DOCS} <= {link.partition("#")[0] for link in links}
    assert len(DOCS) >= 5 and len(links) >= 25
    assert len(README.splitlines()) <= 260, "the README is a guide: details belong in docs/"


def test_stage_table_names_every_stage_near_the_top():
    stages = ("decode", "faces", "transcripts", "prepare", "import", "extract", "store", "train", "evaluate",
              "label", "default model")
    start = README.index("| stage | module |")
    assert start < README.index("## Job 1"), "the stage -> module map comes before the jobs"
    table = README[start:]
    for stage in stages:
        assert re.search(rf"^\| {stage}\b", table, flags=re.M), f"no row for stage {stage!r}"


@pytest.mark.parametrize("page", [README_PATH, *DOCS], ids=["README.md", *(d.name for d in DOCS)])
def test_library_example_imports_resolve(page):
    for block in fenced_blocks(page.read_text(encoding="utf-8"), "python"):
        for module, names in re.findall(r"^from (affectflow[\w.]*) import ([\w, ]+)$", block, flags=re.M):
            imported = importlib.import_module(module)
            for name in (n.strip() for n in names.split(",")):
                assert hasattr(imported, name), f"{page.name}: {module} has no {name}"
