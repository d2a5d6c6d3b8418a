"""`invoke data`: MNIST into the folder the train service mounts (download, or a generated stand-in), or check
and record what is there. The work is the payload's mnist.py, the same code the images run."""

from __future__ import annotations

import os
from pathlib import Path

from labstack import ROOT, payload
from labstack.build.pipconf import host_pip_sources
from labstack.compose.env import read_env
from labstack.errors import BadInput, LabstackError, shown
from labstack.paths import file_in_the_way


def data_helper(
    folder: str | None, *, download: bool = False, generate: bool = False, verify: bool = False, record: bool = False
) -> Path:
    """`invoke data`: one of download (default), generate, verify, record on the data folder."""
    chosen = [name for name, on in (("download", download), ("generate", generate), ("verify", verify),
                                    ("record", record)) if on]  # fmt: skip
    if len(chosen) > 1:
        raise BadInput(f"choose one of --download, --generate, --verify, --record, not {' and '.join(chosen)}")
    action = chosen[0] if chosen else "download"
    written = read_env().get("DATA_DIR")
    path = Path(folder or written or ROOT / "data")
    source = "--folder" if folder else "DATA_DIR in .env" if written else "the data folder"
    in_the_way = file_in_the_way(path)
    if in_the_way:
        raise BadInput(
            f"{source} {shown(str(path))} {in_the_way}, not a folder: give a folder (made if missing), e.g. data"
        )
    mnist = payload.load("mnist")
    if action == "download":
        cert = host_pip_sources().cert  # the host's proxy CA, as pip uses it
        if cert and "SSL_CERT_FILE" not in os.environ:
            os.environ["SSL_CERT_FILE"] = cert
    try:
        if action == "download":
            mnist.download(path)
            print(f"MNIST downloaded and verified in {path}")
        elif action == "generate":
            mnist.generate(path)
            print(f"wrote a learnable stand-in dataset (NOT MNIST) and its {mnist.SUMS} to {path}")
        elif action == "record":
            print(f"recorded the checksums in {mnist.record(path)}")
        else:
            _, source, _ = mnist.verify(path)
            print(f"{path}: the four IDX files match {source}")
    except mnist.DataError as err:
        raise LabstackError(str(err), code=err.code) from None
    return path
