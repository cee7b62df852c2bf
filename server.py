#!/usr/bin/env python3
"""Entry point with the name the user docs use: ``python server.py --port 8000``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from oomnitza_connector.server.cli import main

if __name__ == "__main__":
    sys.exit(main(program_dir=Path(__file__).resolve().parent))
