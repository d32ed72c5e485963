"""Imported first by the evidence workers' forkserver (server.PRELOAD), never by the labelling process.

Importing it makes the importing process ignore SIGINT. Ctrl-C reaches every process of the terminal's
process group; the labelling process handles it (kills its workers, closes its output, prints one line),
so the forkserver must not die with a KeyboardInterrupt traceback while it imports its modules, and the
workers it forks inherit the ignored signal from the moment they exist.
"""

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
