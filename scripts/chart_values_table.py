"""Writes the values table of charts/vault-sts-operator/README.md from values.yaml.

Each row: the value's dotted key, its type, its default and its description, which is the comment
block just above the key (helm-docs' `# --` marker is stripped) or the comment at the end of its line.
Maps with keys of their own are described through their leaves; lists and empty maps are leaves.

    python scripts/chart_values_table.py          # rewrite the table between the README's markers
    python scripts/chart_values_table.py --check  # exit 1 when the README's table is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "vault-sts-operator"
START, END = "<!-- values-table:start -->", "<!-- values-table:end -->"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?P<rest>.*)$")


def comments(text: str) -> dict[str, str]:
    """Dotted key -> description, from the comments around each key line."""
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            body = stripped.lstrip("#").strip()
            body = body[2:].strip() if body.startswith("--") else body
            # A commented-out example value (`# maxUnavailable: 1`) is no description.
            if not KEY.match(body) or " " in body.split(":", 1)[0]:
                pending.append(body)
            continue
        match = KEY.match(line)
        if not match:
            if not stripped:
                pending = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([k for _, k in stack] + [match["key"]])
        stack.append((indent, match["key"]))
        inline = ""
        rest = match["rest"]
        if " #" in rest:
            inline = rest.split(" #", 1)[1].strip()
        found[dotted] = " ".join(pending).strip() or inline
        pending = []
    return found


def leaves(values: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(values, dict) and values:
        rows: list[tuple[str, Any]] = []
        for key, value in values.items():
            rows += leaves(value, f"{prefix}.{key}" if prefix else str(key))
        return rows
    return [(prefix, values)]


def type_name(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object",
            type(None): "null"}[type(value)]


def table(values_text: str) -> str:
    values = yaml.safe_load(values_text)
    described = comments(values_text)
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, value in leaves(values):
        default = json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else json.dumps(value)
        description = described.get(key, "")
        cells = [f"`{key}`", type_name(value), f"`{default}`", description]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows)


def render(readme: str, values_text: str) -> str:
    head, _, tail = readme.partition(START)
    _, _, after = tail.partition(END)
    return f"{head}{START}\n{table(values_text)}\n{END}{after}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if the README's table is out of date")
    args = parser.parse_args(argv)
    readme_path = CHART / "README.md"
    readme = readme_path.read_text()
    if START not in readme or END not in readme:
        print(f"{readme_path} lacks the markers {START} / {END}", file=sys.stderr)
        return 1
    wanted = render(readme, (CHART / "values.yaml").read_text())
    if args.check:
        if wanted != readme:
            print("the chart README's values table is out of date: python scripts/chart_values_table.py",
                  file=sys.stderr)
            return 1
        return 0
    readme_path.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
