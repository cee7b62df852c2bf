"""``python -m oomnitza_connector``: the same command line as ``connector.py`` and ``oomnitza-connector``."""

from .cli import console_main

if __name__ == "__main__":
    console_main()
