"""Imported first by the evidence workers' forkserver (server.PRELOAD), never by the labelling process.

Importing it makes the importing process ignore SIGINT. Ctrl-C reaches every process of the terminal's
process group; the labelling process handles it (kills its workers, closes its output, prints one line),
so the forkserver must not die with a KeyboardInterrupt traceback while it imports its modules, and the
workers it forks inherit the ignored signal from the moment they exist.

It also makes the forkserver end without tearing its modules down: once the labelling process has gone,
the server's interpreter finalisation (torch, CTranslate2, the decoders: ~0.6 CPU-s) would run on after
the command returned, holding the command's stdout and stderr open (a pipe such as `affectflow label ... |
tee log` waited for it). The server holds no file or buffer of its own to flush; its workers end with
os._exit already (multiprocessing's children never finalise).
"""

import atexit
import os
import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
atexit.register(os._exit, 0)  # registered first, so run last: after every other exit handler of the server
