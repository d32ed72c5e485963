"""The forkserver that evidence worker processes are forked from, startable before anything heavy is imported.

This module imports only the standard library, so a command can start the server before its own heavy
imports (`affectflow label` calls `start_worker_server()` once it knows there is work, before importing
the labelling job): the server's imports (torch, the face detector, the ASR, the decoders) then run on another core while this process
imports its own and loads the labeller.
"""

from __future__ import annotations

import importlib.util
import multiprocessing

PRELOAD = ["affectflow.pipeline.label.worker_signals", "affectflow.pipeline.label.workers", "facenet_pytorch", "faster_whisper", "faster_whisper.vad",
           "ctranslate2", "decord", "torchcodec.decoders"]
"""Imported once by the forkserver and so shared by every worker it forks (each import costs seconds); the
first makes the server and its workers ignore Ctrl-C, which the labelling process handles."""


def installed(names: list[str]) -> list[str]:
    """The module names whose top-level package is installed, found without importing anything: `find_spec`
    of a dotted name imports its parents (torchcodec.decoders would import torch, ~1.8 s, in this process)."""
    return [name for name in names if importlib.util.find_spec(name.partition(".")[0]) is not None]


def start_worker_server() -> multiprocessing.context.BaseContext:
    """Start the forkserver that worker processes are forked from (if not running), importing the heavy
    modules in the background: call it before loading the labeller so both happen at once. Returns the
    forkserver context (the server is reused by every later pool of this process)."""
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(installed(PRELOAD))
    forkserver.ensure_running()
    return context
