#!/usr/bin/env bash
# Domino app entry point: Domino runs app.sh and routes the app's URL to 0.0.0.0:8888.
# Run the app as the prod deployer (the role that may write domino-models-prod and, through
# IRSA, read the MLflow bucket). MLFLOW_TRACKING_URI is set by Domino inside the run.
#
# syncd is installed from this project itself: the Domino project's code folder holds this
# repository (DOMINO_WORKING_DIR: /mnt/code for Git-based projects, /mnt for DFS ones). To run
# a released build instead, set SYNCD_PACKAGE to a wheel's path, e.g.
# /mnt/data/wheels/syncd-0.1.0-py3-none-any.whl.
#
# The prod dataset is shared into this project. Domino mounts it at
# /mnt/imported/data/domino-models-prod in Git-based projects (code in /mnt/code) and at
# /domino/datasets/domino-models-prod in DFS ones; config/syncd.yaml's root is
# ${DOMINO_DATASETS_DIR}/domino-models-prod/llm-models, so the one file fits both.
set -euo pipefail
project="${DOMINO_WORKING_DIR:-/mnt/code}"
if [ "$project" = /mnt/code ]; then datasets=/mnt/imported/data; else datasets=/domino/datasets; fi
export DOMINO_DATASETS_DIR="${DOMINO_DATASETS_DIR:-$datasets}"
package="${SYNCD_PACKAGE:-$project}"
python -m pip install --quiet --user "$package"
export PATH="$HOME/.local/bin:$PATH"
export SYNCD_HTTP__HOST=0.0.0.0 SYNCD_HTTP__PORT=8888
exec syncd run --config "${SYNCD_CONFIG:-$project/config/syncd.yaml}"
