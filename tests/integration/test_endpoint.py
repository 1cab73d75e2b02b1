"""The endpoint's side: the registered version loads from the folder syncd published.

This is the seed's last step (a Model Endpoint starts, its pyfunc reads model_context.json and
opens `/llm-models/{run_id}`), done with MLflow's own loader against the real server.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pytest

from syncd.app.cli import main
from syncd.pyfunc import model_folder
from tests.support.models import publish, unique_name


def test_endpoint_loads_the_version_from_the_synced_folder(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    name = unique_name("endpoint")
    published = publish(os.environ["MLFLOW_TRACKING_URI"], tmp_path / "src", name)
    mount = tmp_path / "mount"  # what the mutation mounts at /, holding llm-models/
    env.setenv("LOCAL_ROOT_FOLDER", str(mount))
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])

    # Before syncd ran, the endpoint fails at start, naming the folder it wanted.
    with pytest.raises(FileNotFoundError, match=published.parent_run_id):
        mlflow.pyfunc.load_model(f"models:/{name}@production")

    assert (
        main(
            [
                "sync",
                "--model",
                name,
                "--alias",
                "production",
                "--root",
                str(mount / "llm-models"),
                "--no-progress",
            ]
        )
        == 0
    )
    endpoint = mlflow.pyfunc.load_model(f"models:/{name}@production")
    # Without transformers installed the loader answers with the files it found.
    files = endpoint.predict(["hello"])
    assert "config.json" in files
    assert "model-00001-of-00002.safetensors" in files
    assert ".syncd" not in " ".join(files)


def test_model_folder_refuses_a_context_that_is_not_a_run_id(tmp_path: Path) -> None:
    context = tmp_path / "model_context.json"
    context.write_text(json.dumps({"run_id": "../../etc"}))
    with pytest.raises(ValueError, match="not a 32-hex run id"):
        model_folder(context, tmp_path)
    context.write_text(json.dumps({"run_id": "a" * 32}))
    assert model_folder(context, tmp_path) == tmp_path / "llm-models" / ("a" * 32)
