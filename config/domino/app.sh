#!/usr/bin/env bash
# Domino app entry point: Domino runs app.sh and routes the app's URL to 0.0.0.0:8888.
# Run the app as the prod deployer (the role that may write domino-models-prod and, through
# IRSA, read the MLflow bucket). MLFLOW_TRACKING_URI is set by Domino inside the run.
#
# syncd is installed from this project itself: the Domino project's code folder holds this
# repository (DOMINO_WORKING_DIR: /mnt/code for Git-based projects, /mnt for DFS ones). To run
# a released build instead, set SYNCD_PACKAGE to a wheel's path, e.g.
# /mnt/data/wheels/syncd-0.1.0-py3-none-any.whl.
set -euo pipefail
project="${DOMINO_WORKING_DIR:-/mnt/code}"
package="${SYNCD_PACKAGE:-$project}"
python -m pip install --quiet --user "$package"
export PATH="$HOME/.local/bin:$PATH"
export SYNCD_HTTP__HOST=0.0.0.0 SYNCD_HTTP__PORT=8888
exec syncd run --config "${SYNCD_CONFIG:-$project/config/syncd.yaml}"
