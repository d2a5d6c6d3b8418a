"""Folder and file options checked before any work starts (and before Docker is asked): each case below was a
traceback, or a refusal only after Docker was asked, found by the scan in test_task_options.py."""

from __future__ import annotations

import pytest

from labstack.errors import BadInput, shown
from labstack.paths import file_in_the_way, output_folder
from tests.invoking import assert_one_line_failure, run_invoke

NO_DOCKER = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
LONG = "x" * 5000  # longer than any file name a Linux file system takes (255 bytes)


def test_a_name_too_long_for_the_file_system_is_said_not_raised(tmp_path):
    assert file_in_the_way(tmp_path / LONG) == "cannot be made: File name too long"
    assert file_in_the_way(tmp_path / LONG / "sub") == "cannot be made: File name too long"
    assert file_in_the_way(tmp_path / "new" / "sub") == ""


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", ["--out is empty", "(default: reports/x)"]),
        ("FILE", ["is a file, not a folder"]),
        ("FILE/sub", ["cannot be made:", "is a file"]),
        (LONG, ["cannot be made: File name too long", "(5000 characters)"]),
    ],
    ids=["empty", "a-file", "below-a-file", "too-long"],
)
def test_an_output_folder_that_cannot_be_is_bad_input_naming_the_option(tmp_path, text, words):
    (tmp_path / "FILE").write_text("")
    text = text.replace("FILE", str(tmp_path / "FILE"))
    with pytest.raises(BadInput) as caught:
        output_folder("out", text, "reports/x")
    for word in words:
        assert word in str(caught.value)
    assert output_folder("out", str(tmp_path / "new" / "sub"), "reports/x") == tmp_path / "new" / "sub"
    assert not (tmp_path / "new").exists(), "the check made the folder: that is the task's job, after Docker"


def test_a_typed_value_is_shown_on_one_readable_line():
    assert shown("\x7f\u202eabc") == "\\x7f\\u202eabc"
    assert shown("héllo") == "héllo"
    assert shown("x" * 300) == "x" * 200 + "... (300 characters)"
    assert shown("x" * 200) == "x" * 200


CASES = [
    (["data", "--folder", LONG], ["--folder xxx", "cannot be made: File name too long"]),
    (["validate", "--out", ""], ["--out is empty", "(default: reports/validate)"]),
    (["validate", "--out", "FILE"], ["is a file, not a folder"]),
    (["validate", "--out", LONG], ["cannot be made: File name too long"]),
    (["export", "--out", LONG], ["cannot be made: File name too long"]),
    (["slurm", "--data", LONG], ["--data xxx", "cannot be made: File name too long"]),
    (["slurm", "--project", LONG], ["--project xxx", "cannot be made: File name too long"]),
    (["slurm", "--runs", "FILE"], ["--runs", "is a file, not a folder"]),
    (["slurm", "--runs", ""], ["--runs is empty"]),
    (["kube-job", "--record", ""], ["--record is empty", "reports/push/digests.json"]),
    (["kube-job", "--record", "FOLDER"], ["--record", "is a folder", "`invoke push` wrote"]),
    (["kube-job", "--record", LONG], ["cannot be read (File name too long)"]),
    (["kube-job", "--runs", "FILE"], ["--runs", "is a file, not a folder"]),
    (["up-cpu", "--env-file", LONG], ["--env-file xxx", "cannot be read (File name too long)"]),
    (["down", "--env-file", LONG], ["cannot be read (File name too long)"]),
    (["down", "--env-file", "FOLDER"], ["is a folder", "`invoke env` writes .env"]),
    (["down", "--env-file", "MISSING"], ["does not exist"]),
    (["down", "--project", "My Lab"], ["--project My Lab is not a compose project name"]),
    (["train", "--env-file", LONG], ["--env-file xxx", "cannot be read (File name too long)"]),
    (["train", "--project", "Lab"], ["--project Lab is not a compose project name"]),
    (["up-cpu", "--project", "\x7f\u202e"], ["--project \\x7f\\u202e is not a compose project name"]),
]


@pytest.mark.parametrize(
    ("args", "words"), [pytest.param(*case, id=" ".join(shown(word, 12) for word in case[0])) for case in CASES]
)
def test_a_bad_folder_or_file_option_is_refused_before_docker_is_asked(tmp_path, args, words):
    """Exit 2, not 3: the option is refused before Docker is asked (the daemon here is a dead socket)."""
    (tmp_path / "FILE").write_text("a file")
    (tmp_path / "FOLDER").mkdir()
    paths = {name: str(tmp_path / name) for name in ("FILE", "FOLDER", "MISSING")}
    result = run_invoke(*(paths.get(arg, arg) for arg in args), env=NO_DOCKER)
    assert_one_line_failure(result, 2, *words)
