"""Optional libraries and the pip extra that installs each, so a missing one is one clear line.

The core install covers CSV/JSON, every REST source, the Oomnitza client, the local store, managed
mode and the webhook server; sources with a vendor library of their own need their extra.
"""

from __future__ import annotations

import importlib.util

DIST = "oomnitza-connector"

# top-level import name -> extra that installs it
PACKAGE_EXTRAS: dict[str, str] = {
    "ldap3": "ldap",
    "msal": "azure",
    "google": "google",
    "pymssql": "sccm",
    "pyodbc": "sccm-odbc",
    "zeep": "jasper",
    "keyrings": "cryptfile",
}

# INI module -> import names of which at least one must be importable for the section to run
SOURCE_NEEDS: dict[str, tuple[str, ...]] = {
    "ldap": ("ldap3",),
    "ldap_assets": ("ldap3",),
    "azureusers": ("msal",),
    "chromebooks": ("google.auth",),
    "google_mobile_devices": ("google.auth",),
    "sccm": ("pymssql", "pyodbc"),
}


def install_hint(package: str) -> str:
    """``pip install '<dist>[extra]'`` for a missing import name (its top-level part)."""
    top = package.split(".", 1)[0]
    extra = PACKAGE_EXTRAS.get(top)
    return f"pip install '{DIST}[{extra}]'" if extra else f"pip install {top}"


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


def missing_for(module: str) -> str | None:
    """The first missing import name of an INI module's library (None when it can run)."""
    needs = SOURCE_NEEDS.get(module, ())
    if not needs or any(_importable(name) for name in needs):
        return None
    return needs[0]
