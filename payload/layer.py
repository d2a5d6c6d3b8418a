"""Check a layer and write its manifest (runs inside `docker build`, around the layer's offline install).

layer.py snapshot FILE        what is installed before the layer (JSON name -> version)
layer.py check --layer NAME --before FILE --requirements FILE --missing FILE
                              refuse the layer if it changed anything below it, or if a package it was asked
                              for does not import; then write under /opt/labstack/manifest:
                                pip-freeze.txt     every installed distribution again (the whole image)
                                NAME-freeze.txt    what this layer added
                                NAME.json          added, the modules imported per requirement, and what the
                                                   layer goes without and why (the lock's missing entries)
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import re
import sys
from pathlib import Path

from manifest import distributions  # the payload's manifest writer, beside this file in the image

MANIFEST_DIR = Path("/opt/labstack/manifest")


def requirement_name(line: str) -> str:
    """The distribution a requirement line names: `scikit-learn==1.9.1` -> scikit-learn."""
    return re.split(r"[\s\[<>=!~;@]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")


def modules_of(distribution: str) -> list[str]:
    """The importable top-level modules a distribution installs (`scikit-learn` -> sklearn)."""
    found = [
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if distribution in {d.lower().replace("_", "-") for d in dists}
    ]
    public = sorted(m for m in found if not m.startswith("_") and m.isidentifier())
    return public or sorted(found)


def import_problems(names: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    imported: dict[str, list[str]] = {}
    problems = []
    for name in names:
        modules = modules_of(name)
        if not modules:
            problems.append(f"{name} is not installed")
            continue
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception as err:  # any failure to import is the finding
                problems.append(f"{name} does not import ({module}: {type(err).__name__}: {err})")
        imported[name] = modules
    return imported, problems


def read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def check(args: argparse.Namespace) -> int:
    before = json.loads(args.before.read_text())
    after = distributions()
    changed = [
        f"{name} {version} -> {after.get(name, 'removed')}"
        for name, version in before.items()
        if after.get(name) != version
    ]
    if changed:
        print(f"labstack: the {args.layer} layer changed packages below it: {', '.join(changed)}", file=sys.stderr)
        return 1
    imported, problems = import_problems([requirement_name(r) for r in read_lines(args.requirements)])
    for problem in problems:
        print(f"labstack: {args.layer} layer: {problem}", file=sys.stderr)
    if problems:
        return 1
    missing = {}
    for line in read_lines(args.missing):
        requirement, _, why = line.partition(" -- ")
        missing[requirement.strip()] = why.strip()
    added = {name: version for name, version in after.items() if name not in before}
    record = {"layer": args.layer, "added": added, "imports": imported, "missing": missing}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pip-freeze.txt").write_text("".join(f"{n}=={v}\n" for n, v in after.items()))
    (args.out / f"{args.layer}-freeze.txt").write_text("".join(f"{n}=={v}\n" for n, v in added.items()))
    (args.out / f"{args.layer}.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(json.dumps({"layer": args.layer, "added": len(added), "missing": sorted(missing)}))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="layer.py")
    commands = parser.add_subparsers(dest="command", required=True)
    snapshot = commands.add_parser("snapshot")
    snapshot.add_argument("file", type=Path)
    checking = commands.add_parser("check")
    checking.add_argument("--layer", required=True)
    checking.add_argument("--before", type=Path, required=True)
    checking.add_argument("--requirements", type=Path, required=True)
    checking.add_argument("--missing", type=Path, required=True)
    checking.add_argument("--out", type=Path, default=MANIFEST_DIR)
    args = parser.parse_args(argv)
    if args.command == "snapshot":
        args.file.write_text(json.dumps(distributions()))
        return 0
    return check(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
