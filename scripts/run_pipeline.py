#!/usr/bin/env python
"""Label a folder of recordings: `python scripts/run_pipeline.py --videos clips/` (same as `affectflow label`)."""

import sys

from affectflow.pipeline.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["label", *sys.argv[1:]]))
