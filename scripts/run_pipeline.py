#!/usr/bin/env python
"""Label a folder of recordings: `python scripts/run_pipeline.py --videos clips/` (same as `affectflow label`)."""

import sys

from affectflow.pipeline.cli.main import console_main

if __name__ == "__main__":
    sys.argv[1:1] = ["label"]
    console_main()
