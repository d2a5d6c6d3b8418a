"""README.md's two commands are what a newcomer pastes: keep them true and keep CI running the same one."""

import re

from labstack import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```(?:sh|bash)\n(.+?)\n```", text, re.S)[:2]


def test_readme_starts_with_the_main_job_and_the_test_command():
    main_job, tests = readme_commands()
    assert "invoke benchmark" in main_job and "bootstrap.sh" in main_job
    assert "invoke test" in tests and "bootstrap.sh" in tests


def test_ci_runs_the_readme_test_command():
    _, tests = readme_commands()
    assert f"test_command='{tests.strip()}'" in (ROOT / ".ci" / "run").read_text()


def test_scripts_the_readme_names_exist_and_are_executable():
    for command in readme_commands():
        for script in re.findall(r"\./(scripts/[\w./-]+)", command):
            path = ROOT / script
            assert path.is_file() and path.stat().st_mode & 0o111, script


README_LIMIT = 8192  # bytes: a newcomer reads the README in five minutes; everything else lives in docs/
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def test_readme_is_short():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes, more than {README_LIMIT}: move detail into docs/"


def relative_links(page):
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        yield target, (page.parent / target.split("#", 1)[0]).resolve()


def test_every_relative_link_in_the_readme_and_docs_points_to_a_file():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) > 1, "docs/ holds the pages the README links to"
    broken = [f"{page.relative_to(ROOT)}: {target}" for page in pages for target, path in relative_links(page)
              if not path.is_file()]  # fmt: skip
    assert not broken, broken
