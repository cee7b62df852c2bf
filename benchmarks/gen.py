"""Deterministic CSV of N assets for the benchmarks (same N and seed → same bytes)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

COLUMNS = [
    "serial_number",
    "asset_tag",
    "model",
    "manufacturer",
    "hostname",
    "mac_address",
    "os",
    "assigned_to",
    "purchase_date",
    "location",
    "notes",
]
FIELDS = {c: c.upper() for c in COLUMNS}
MODELS = [
    ("Apple", 'MacBook Pro 14"'),
    ("Dell", "Latitude 7440"),
    ("Lenovo", "ThinkPad X1 Carbon"),
    ("HP", "EliteBook 840 G10"),
    ("Microsoft", "Surface Laptop 5"),
]
PEOPLE = ["anna", "josé", "zoë", "søren", "łukasz", "françois", "李", "иван", "priya", "renée"]
CITIES = ["Zürich", "São Paulo", "Kraków", "東京", "San Francisco", "Montréal", "Dublin"]
NOTES = ["", "", "Dock, charger and sleeve", 'Keyboard "US-intl" layout', "Loaner — return to IT"]


def write_assets(path: Path, n: int, seed: int = 1) -> None:
    rnd = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for i in range(n):
            make, model = rnd.choice(MODELS)
            who = rnd.choice(PEOPLE)
            w.writerow(
                [
                    f"SN{i:08d}",
                    f"AT-{rnd.randrange(10**6):06d}",
                    model,
                    make,
                    f"host-{i}",
                    ":".join(f"{rnd.randrange(256):02x}" for _ in range(6)),
                    rnd.choice(["macOS 14.4", "Windows 11 Pro", "Ubuntu 22.04"]),
                    f"{who}{i % 997}@acme.test" if rnd.random() > 0.06 else "",
                    f"20{rnd.randrange(18, 26)}-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d}",
                    rnd.choice(CITIES),
                    rnd.choice(NOTES),
                ]
            )


def write_ini(path: Path, csv_path: Path, url: str, token: str, extra: tuple[str, ...] = ()) -> None:
    lines = [
        "[oomnitza]",
        f"url = {url}",
        f"api_token = {token}",
        "",
        "[csv_assets]",
        "enable = True",
        f"filename = {csv_path}",
        "sync_field = SERIAL_NUMBER",
    ]
    lines += [f'mapping.{field} = {{"source": "{col}"}}' for col, field in FIELDS.items()]
    lines += list(extra)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
