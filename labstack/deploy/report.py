"""What a deploy tells: a host x image table on the terminal, with each failure's one-line diagnosis under it;
report.json (everything, per host and image), junit.xml (a suite per host, a case per image, for CI) and
failed-hosts.txt (a hosts file of just the hosts that failed: `--hosts @reports/deploy/failed-hosts.txt`
reruns only them)."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from rich.console import Console
from rich.table import Table

from labstack.deploy.plan import Action, LocalImage, human
from labstack.deploy.run import HostResult

FAILED_HOSTS = "failed-hosts.txt"


def cell(result: HostResult, action: Action | None, check: bool) -> str:
    """An image's cell on a host: what happened to it; where the host failed or was stopped before the image
    was done, that."""
    if action is not None and (action.kind == "fail" or action.done or result.status not in ("FAILED", "interrupted")):
        return action.cell(check)
    if result.status == "FAILED":
        return f"FAILED ({result.stage})"
    return "interrupted" if result.status == "interrupted" else ""


def print_table(
    results: list[HostResult], images: list[LocalImage], check: bool, console: Console | None = None
) -> None:
    if console is None:
        console = Console()
        needed = 8 + sum(max(len(image.name), 20) + 3 for image in images) + 10
        if not console.is_terminal and console.width < needed:  # a log is read whole: no cell folded in two
            console = Console(width=needed)
    if check:
        print("the plan (--check: nothing was changed)")
    table = Table()
    table.add_column("host")
    for image in images:
        table.add_column(image.name, overflow="fold")
    table.add_column("time", justify="right")
    for result in results:
        by_ref = {a.image.ref: a for a in result.actions}
        cells = [cell(result, by_ref.get(image.ref), check) for image in images]
        styled = [f"[red]{c}[/red]" if c.startswith("FAILED") else c for c in cells]
        table.add_row(result.host.label, *styled, f"{result.seconds:.1f} s")
    console.print(table)
    for line in diagnoses(results):
        print(line)  # whole lines: a diagnosis is read, and grepped, in one piece


def diagnoses(results: list[HostResult]) -> list[str]:
    """One line per failure, skip and note: `host: what (stage): why and the fix`."""
    lines = []
    for result in results:
        label = result.host.label
        if result.status == "FAILED":
            lines.append(f"{label}: FAILED ({result.stage}): {result.reason}")
        for action in result.actions:
            if action.kind == "fail":
                lines.append(f"{label}: {action.image.name} FAILED ({action.stage}): {action.reason}")
            elif action.kind == "skip":
                lines.append(f"{label}: {action.image.name} skipped: {action.reason}")
        lines += [f"{label}: {note}" for note in result.notes]
    return lines


def action_record(action: Action) -> dict:
    return {
        "ref": action.image.ref,
        "id": action.image.id,
        "status": {"fail": "failed", "skip": "skipped"}.get(action.kind, action.done or action.kind),
        "planned": action.kind,
        "stage": action.stage or None,
        "reason": action.reason or None,
        "missing_bytes": action.missing_bytes,
        "sent_bytes": action.sent_bytes,
        "sent": human(action.sent_bytes),
        "seconds": action.seconds,
        "waited_for_push_seconds": action.waited,
        "replaced": action.held_id if action.done and action.held_id != action.image.id else None,
    }


def write_reports(results: list[HostResult], options: dict, seconds: float, out: Path, revision: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "labstack_revision": revision,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "options": options,
        "seconds": round(seconds, 1),
        "passed": all(r.ok for r in results),
        "hosts": [
            {
                "host": r.host.label,
                "spec": r.host.spec,
                "status": r.status if r.ok or r.status != "done" else "FAILED",
                "stage": r.stage or None,
                "reason": r.reason or None,
                "transport": r.transport or None,
                "tunnel_port": r.tunnel_port,
                "notes": r.notes,
                "seconds": r.seconds,
                "images": [action_record(a) for a in r.actions],
            }
            for r in results
        ],
    }
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=2))
    write_junit(results, out / "junit.xml")
    failed = out / FAILED_HOSTS
    bad = [r.host.spec for r in results if not r.ok]
    if bad:
        failed.write_text(
            f"# the hosts whose deploy failed: rerun with --hosts @{failed}\n" + "".join(f"{h}\n" for h in bad)
        )
    elif failed.exists():
        failed.unlink()  # a stale list would rerun hosts that are fine now
    return path


def write_junit(results: list[HostResult], path: Path) -> None:
    suites = ET.Element("testsuites", name="deploy")
    for result in results:
        suite = ET.SubElement(suites, "testsuite", name=result.host.label, time=f"{result.seconds:.1f}")
        cases = result.actions or [None]
        failures = skipped = 0
        for action in cases:
            name = action.image.ref if action else "connect"
            case = ET.SubElement(
                suite, "testcase", classname=result.host.label, name=name, time=f"{action.seconds if action else 0:.1f}"
            )
            if result.status == "FAILED" and (action is None or not action.done):
                failures += 1
                ET.SubElement(case, "failure", message=f"{result.stage}: {result.reason}")
            elif result.status == "interrupted" and (action is None or not action.done):
                failures += 1
                ET.SubElement(case, "failure", message="interrupted")
            elif action is not None and action.kind == "fail":
                failures += 1
                ET.SubElement(case, "failure", message=f"{action.stage}: {action.reason}")
            elif action is not None and action.kind == "skip":
                skipped += 1
                ET.SubElement(case, "skipped", message=action.reason)
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(failures))
        suite.set("skipped", str(skipped))
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
