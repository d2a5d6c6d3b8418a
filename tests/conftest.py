"""Options shared by every test folder."""

from __future__ import annotations


def pytest_addoption(parser):
    parser.addoption(
        "--variant",
        default="all",
        help="image variants the image tests build and check: cpu, cuda or all (default: all)",
    )
