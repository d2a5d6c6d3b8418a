"""invoke validate's decisions and report, without Docker: the GPU gate, target parsing, the per-check
records of a real pytest run, the table and the merged JUnit file."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from labstack.errors import LabstackError
from labstack.gpu import gpu_gate
from labstack.matrix import load_matrix
from labstack.validate.run import Target, TargetResult, all_passed, check_gpu_mode, merge_junit, table_rows

MATRIX = load_matrix()
PROBLEM = "no NVIDIA driver on this host"


@pytest.mark.parametrize(
    ("mode", "problem", "decision"),
    [
        ("auto", None, ("run", None)),
        ("auto", PROBLEM, ("skip", PROBLEM)),
        ("require", None, ("run", None)),
        ("require", PROBLEM, ("fail", PROBLEM)),
        ("skip", None, ("skip", "GPU checks left out (--gpu skip)")),
    ],
)
def test_gpu_gate(mode, problem, decision):
    assert gpu_gate(mode, problem) == decision


def test_unknown_gpu_mode_is_bad_input():
    with pytest.raises(LabstackError) as err:
        check_gpu_mode("maybe")
    assert err.value.code == 2 and "auto, require, skip" in str(err.value)


SAMPLE_SUITE = """
import pytest

def test_passes():
    pass

def test_fails():
    assert False, "driver 535 < 580 required by CUDA 13.0: upgrade the driver"

def test_skips():
    pytest.skip("no NVIDIA driver on this host")

@pytest.mark.parametrize("image", [])
def test_not_applicable_here(image):
    pass

@pytest.fixture
def gate():
    pytest.fail("--gpu require: no NVIDIA driver on this host", pytrace=False)

def test_gated(gate):
    pass
"""


def test_the_report_plugin_records_what_ran_and_never_passes_what_did_not(tmp_path):
    (tmp_path / "test_sample.py").write_text(SAMPLE_SUITE)
    report = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "labstack.validate.plugin", "--labstack-report", str(report),
         "-p", "no:cacheprovider", str(tmp_path / "test_sample.py")],
        cwd=tmp_path, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    results = {r["check"]: (r["outcome"], r["reason"]) for r in json.loads(report.read_text())["results"]}
    assert results == {
        "passes": ("pass", None),
        "fails": ("fail", "driver 535 < 580 required by CUDA 13.0: upgrade the driver"),
        "skips": ("skip", "no NVIDIA driver on this host"),
        "gated": ("fail", "--gpu require: no NVIDIA driver on this host"),
    }


def result(label, *rows):
    return TargetResult(Target("host", f"ssh://{label}", label), [{"check": c, "outcome": o} for c, o in rows])


def test_table_is_check_by_target_with_not_applicable_cells():
    results = [result("a", ("docker", "pass"), ("gpu", "skip")), result("b", ("docker", "fail"))]
    columns, rows = table_rows(results)
    assert columns == ["a", "b"]
    assert rows == [["docker", "pass", "FAIL"], ["gpu", "skip", ""]]
    assert not all_passed(results) and all_passed(results[:1])


def test_junit_files_are_merged_one_suite_per_target(tmp_path):
    for label in ("a", "b"):
        (tmp_path / f"{label}.xml").write_text(
            '<testsuites><testsuite name="pytest" tests="1"><testcase name="x"/></testsuite></testsuites>'
        )
    results = [result("a"), result("b")]
    for r in results:
        r.junit = tmp_path / f"{r.target.label}.xml"
    merge_junit(results, tmp_path / "junit.xml")
    suites = ET.parse(tmp_path / "junit.xml").getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == ["a", "b"]
