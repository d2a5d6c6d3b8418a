#!/usr/bin/env python3
"""Start JupyterLab in a labstack notebook image, or check that it answers with its token.

    python3 notebook.py start      exec JupyterLab on 0.0.0.0:8888 inside the container; refuses without a token
    python3 notebook.py health     exit 0 when GET /api/status with the token answers 200 (the compose healthcheck)

The port is published on 127.0.0.1 by the compose file; inside the container the server must listen on all
interfaces for Docker's port forwarding to reach it. Standard library only.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

PORT = 8888
MIN_TOKEN_LENGTH = 16


def token_problem(token: str) -> str | None:
    if not token:
        return "JUPYTER_TOKEN is empty: run `invoke env` (writes a random token to .env) or set JUPYTER_TOKEN"
    if len(token) < MIN_TOKEN_LENGTH:
        return f"JUPYTER_TOKEN is shorter than {MIN_TOKEN_LENGTH} characters: use `invoke env --new-token`"
    return None


def start(token: str) -> int:
    problem = token_problem(token) or (
        "the notebook does not run as root: set UID/GID in .env to a non-root user (`invoke env` does)"
        if os.getuid() == 0
        else None
    )
    if problem:
        print(f"labstack: {problem}", file=sys.stderr)
        return 2
    root = "/work" if os.path.isdir("/work") else os.getcwd()
    # The token travels in the environment (JUPYTER_TOKEN), never on the command line where `ps` shows it.
    command = [
        "jupyter", "lab", "--ip=0.0.0.0", f"--port={PORT}", "--no-browser", f"--ServerApp.root_dir={root}",
        "--ServerApp.allow_remote_access=True",
    ]  # fmt: skip
    os.execvp(command[0], command)
    return 1


def health(token: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{PORT}/api/status", headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as err:
        print(f"notebook not healthy: {err}", file=sys.stderr)
        return 1


def main(argv: list[str]) -> int:
    token = os.environ.get("JUPYTER_TOKEN", "")
    if argv == ["start"]:
        return start(token)
    if argv == ["health"]:
        return health(token)
    print("usage: notebook.py start|health", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
