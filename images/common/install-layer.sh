#!/bin/sh
# Runs inside `docker build` with a layer's build context bind-mounted at /tmp/layer: installs the layer's lockfile
# offline on top of the image below (no index, no network, no CA bundle), then payload/layer.py proves that nothing
# below changed and that every requested package imports, and writes the layer's manifest.
# Usage: install-layer.sh LAYER
set -eu
layer=$1
# No pip configuration of the image applies here: the lab layer's pip.conf sends users' own installs elsewhere.
export PIP_CONFIG_FILE=/dev/null
python /opt/labstack/payload/layer.py snapshot /tmp/layer-before.json
pip install --no-index --find-links /tmp/layer/wheels --require-hashes --no-deps --only-binary=:all: \
    --requirement /tmp/layer/requirements.lock
# --no-deps installs exactly the lock; pip check proves the lock was complete.
pip check
python /opt/labstack/payload/layer.py check --layer "$layer" --before /tmp/layer-before.json \
    --requirements /tmp/layer/requirements.txt --missing /tmp/layer/missing.txt
rm /tmp/layer-before.json
