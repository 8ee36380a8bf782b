"""Generate the API reference of the docs site (docs/reference/) from the pydantic models.

``make manifests`` runs ``python -m coordinator.refdocs docs/reference``; a test fails when
the committed pages differ from what this module produces. Each page is read from the same
structural schema as its kind's CRD (``crdgen.crd``), so a field's description, type,
default, enum, range, pattern, list rules and CEL rules are written once, in the models,
and the reference cannot say something the API server does not enforce.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from coordinator import crdgen
from coordinator.api import common

HEADER = (
    "<!-- Generated from the pydantic models in operator/coordinator/api by `make manifests`;"
    " do not edit. -->\n"
)


def _text(value: str) -> str:
    """A value in a markdown table cell: one line, no cell breaks, no HTML."""
    flat = " ".join(value.split())
    return flat.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _code(value: Any) -> str:
    shown = value if isinstance(value, str) else json.dumps(value)
    return "`" + _text(shown).replace("`", "'") + "`"


def _type(prop: dict[str, Any]) -> str:
    kind = str(prop.get("type", "any"))
    if kind == "array":
        items = prop.get("items", {})
        kind = f"array of {items.get('type', 'any')}"
    if prop.get("format"):
        kind += f" ({prop['format']})"
    return kind


def _rules(prop: dict[str, Any]) -> list[str]:
    """What the schema enforces on a field, beyond its type, in words."""
    rules: list[str] = []
    if "enum" in prop:
        rules.append("one of " + ", ".join(_code(v) for v in prop["enum"]))
    bounds = {
        "minimum": "≥",
        "maximum": "≤",
        "minLength": "length ≥",
        "maxLength": "length ≤",
        "minItems": "items ≥",
        "maxItems": "items ≤",
        "minProperties": "keys ≥",
        "maxProperties": "keys ≤",
    }
    rules += [f"{word} {prop[key]}" for key, word in bounds.items() if key in prop]
    if "pattern" in prop:
        rules.append(f"matches {_code(prop['pattern'])}")
    list_type = prop.get("x-kubernetes-list-type")
    if list_type == "set":
        rules.append("a set (no duplicates)")
    elif list_type == "map":
        keys = ", ".join(_code(k) for k in prop.get("x-kubernetes-list-map-keys", []))
        rules.append(f"a map keyed by {keys}")
    if prop.get("x-kubernetes-preserve-unknown-fields"):
        rules.append("any fields")
    rules += [_text(rule["message"]) for rule in prop.get("x-kubernetes-validations", [])]
    if "default" in prop:
        rules.append(f"default {_code(prop['default'])}")
    return rules


def _rows(schema: dict[str, Any], path: str) -> list[str]:
    """One table row per field under `schema`, depth first, in the models' order."""
    rows: list[str] = []
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        field = f"{path}.{name}"
        rules = _rules(prop)
        if name in required:
            rules.insert(0, "**required**")
        description = _text(prop.get("description", ""))
        rows.append(f"| `{field}` | {_type(prop)} | {'; '.join(rules)} | {description} |")
        rows += _rows(prop, field)
        items = prop.get("items", {})
        rows += _rows(items, f"{field}[]")
    return rows


def _table(title: str, schema: dict[str, Any], path: str) -> list[str]:
    rules = [_text(rule["message"]) for rule in schema.get("x-kubernetes-validations", [])]
    lines = [f"## {title}", ""]
    if rules:
        lines += ["Rules on the whole of it: " + "; ".join(rules) + ".", ""]
    lines += [
        "| field | type | rules | description |",
        "|---|---|---|---|",
        *_rows(schema, path),
        "",
    ]
    return lines


def page(kind: crdgen.Kind) -> str:
    """The reference page of one kind: what it is, its columns, its spec and status."""
    crd = crdgen.crd(kind)
    version = crd["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    short = ", ".join(f"`{name}`" for name in kind.short_names)
    lines = [
        f"# {kind.kind}",
        "",
        f"`{common.GROUP}/{common.VERSION}`, namespaced; `kubectl get {kind.plural}` "
        f"(short names {short}; category `optiinfra`).",
        "",
        _text(kind.description),
        "",
        "## Columns of `kubectl get`",
        "",
        "| column | from | what |",
        "|---|---|---|",
        *(
            f"| {c.name}{' (with `-o wide`)' if c.priority else ''} | `{c.path}` | "
            f"{_text(c.description)} |"
            for c in kind.columns
        ),
        "",
        *_table("spec", root["properties"]["spec"], "spec"),
    ]
    if "status" in root["properties"]:
        lines += [
            *_table("status", root["properties"]["status"], "status"),
        ]
    else:
        lines += ["No status: the operator only reads it.", ""]
    return HEADER + "\n".join(lines).rstrip("\n") + "\n"


def index() -> str:
    """The reference's first page: the kinds, what each is, where its page is."""
    lines = [
        "# Reference",
        "",
        f"The kinds of `{common.GROUP}/{common.VERSION}`, every field of their spec and "
        "status, generated from the pydantic models that the CRDs in `crds/` are generated "
        "from (`kubectl explain` shows the same descriptions).",
        "",
        "| kind | short names | what it is |",
        "|---|---|---|",
        *(
            f"| [{kind.kind}]({filename(kind)}) | "
            f"{', '.join(f'`{name}`' for name in kind.short_names)} | {_text(kind.description)} |"
            for kind in crdgen.KINDS
        ),
    ]
    return HEADER + "\n".join(lines) + "\n"


def filename(kind: crdgen.Kind) -> str:
    return f"{kind.kind.lower()}.md"


def pages() -> dict[str, str]:
    """Every page of the reference, by file name."""
    return {"index.md": index(), **{filename(kind): page(kind) for kind in crdgen.KINDS}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="refdocs", description="Write the API reference.")
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    args.directory.mkdir(parents=True, exist_ok=True)
    for name, text in pages().items():
        (args.directory / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
