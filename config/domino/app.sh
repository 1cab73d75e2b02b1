#!/usr/bin/env bash
# Domino app entry point: Domino runs app.sh and routes the app's URL to 0.0.0.0:8888.
# Run the app as the prod deployer (the role that may write domino-models-prod and, through
# IRSA, read the MLflow bucket). MLFLOW_TRACKING_URI is set by Domino inside the run.
set -euo pipefail
pip install --quiet --user "syncd"   # or a wheel from your registry / the project's git URL
export SYNCD_HTTP__HOST=0.0.0.0 SYNCD_HTTP__PORT=8888
exec syncd run --config "${SYNCD_CONFIG:-/mnt/code/config/syncd.yaml}"
