#!/usr/bin/env python3
"""Entry point with the name the user docs use: ``python strongbox.py --connector=X --key=K --value=``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from oomnitza_connector.secrets.strongbox import main

if __name__ == "__main__":
    sys.exit(main())
