"""``strongbox``: store, list and delete connector secrets in the OS keyring.

    python strongbox.py --connector=zendesk.abc --key=api_token --value=      # prompts, no echo
    printf %s "$TOKEN" | python strongbox.py --connector=zendesk.abc --key=api_token --value -
    python strongbox.py --connector=zendesk.abc --list
    python strongbox.py --connector=zendesk.abc --key=api_token --delete

``--connector`` is the section name, or its ``vault_alias``. Vault and Conjur secrets are written
with those systems' own tools; their bootstrap ``vault_url`` / ``vault_token`` live here.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TextIO

from .. import __version__
from ..errors import ConnectorError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="strongbox.py", description="Store connector secrets in the OS keyring.")
    parser.add_argument("--version", action="store_true", help="show the version and exit")
    parser.add_argument("--connector", help="section name or vault_alias the secret belongs to")
    parser.add_argument("--key", help="secret (setting) name, e.g. api_token, password, vault_token")
    parser.add_argument(
        "--value",
        nargs="?",
        const="",
        default=None,
        help="'--value=' to be prompted (no echo), '--value -' to read standard input",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true", help="list the key names stored for --connector")
    action.add_argument("--delete", action="store_true", help="delete --key of --connector")
    return parser


def main(
    argv: list[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    inp, out, err = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(f"strongbox {__version__}", file=out)
        return 0
    if not args.connector:
        parser.error("--connector is required")
    if not (args.list or args.key):
        parser.error("--key is required (or --list)")
    from .keyring_store import KeyringStore

    try:
        store = KeyringStore()
        if args.list:
            for name in store.keys(args.connector):
                print(name, file=out)
            return 0
        if args.delete:
            if not store.delete(args.connector, args.key):
                print(f"error: there is no secret '{args.key}' for '{args.connector}'", file=err)
                return 1
            print(f"Deleted secret '{args.key}' of '{args.connector}'.", file=err)
            return 0
        value = _read_value(args.value, inp, err)
        if value is None:
            return 2
        store.set(args.connector, args.key, value)
    except ConnectorError as exc:
        print(f"error: {exc}", file=err)
        return 1
    except KeyboardInterrupt:
        print("Interrupted.", file=err)
        return 130
    print(f"Secret '{args.key}' for '{args.connector}' has been saved.", file=err)
    return 0


def _read_value(option: str | None, inp: TextIO, err: TextIO) -> str | None:
    if option not in (None, "", "-"):
        print(
            "error: do not put the secret on the command line (it would stay in the shell history); "
            "use --value= to be prompted, or --value - to read standard input",
            file=err,
        )
        return None
    if option == "-" or not inp.isatty():
        value = inp.read().rstrip("\r\n")
    else:
        value = getpass.getpass("Your secret: ")
    if not value:
        print("error: the secret is empty; nothing was saved", file=err)
        return None
    return value


if __name__ == "__main__":
    sys.exit(main())
