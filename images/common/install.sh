#!/bin/sh
# Runs inside `docker build` with the verified wheelhouse bind-mounted at /tmp/wheels: installs the image's
# lockfile offline (no index, no network, no CA bundle) and checks the result. The manifest and the check that
# the wheels match the variant come later, from the payload (payload/manifest.py).
set -eu
pip install --no-index --find-links /tmp/wheels --require-hashes --no-deps --only-binary=:all: \
    --requirement /tmp/requirements.lock
# --no-deps installs exactly the lock; pip check proves the lock was complete.
pip check
