"""The `affectflow` command: one thin argparse module per job over the library functions."""
