"""The data scientist's side: binaries on a parent run, a light pyfunc on a nested child run."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import mlflow
from mlflow import MlflowClient

from syncd.errors import SyncdError
from syncd.pyfunc import CONTEXT_ARTIFACT, LlmFromDataset

__all__ = ["PublishedModel", "publish_model"]

Layout = Literal["mlflow3", "mlflow2"]


@dataclass(frozen=True)
class PublishedModel:
    model: str
    version: str
    parent_run_id: str
    child_run_id: str


def serving_requirements() -> list[str]:
    """What the pyfunc needs where it is served, stated rather than inferred: MLflow's
    inference loads the model in a subprocess, fails on this one (its code lives in syncd)
    and falls back to cloudpickle alone with an "unexpected error" warning."""
    import cloudpickle  # type: ignore[import-untyped]

    return [f"mlflow=={mlflow.__version__}", f"cloudpickle=={cloudpickle.__version__}"]


def publish_model(
    tracking_uri: str,
    model: str,
    folder: Path,
    *,
    alias: str | None = None,
    artifact_path: str = "model",
    experiment: str | None = None,
    layout: Layout = "mlflow3",
    context_run_id: str | None = None,
) -> PublishedModel:
    """Log `folder` to a parent run and register a nested child run's pyfunc as a version.

    `layout="mlflow2"` writes what an MLflow 2 server holds: the pyfunc inside the child
    run's artifacts and the version's source pointing there (for older servers and tests).
    `context_run_id` overrides the run named in model_context.json (tests of refusals).
    """
    if not folder.is_dir() or not any(folder.iterdir()):
        raise SyncdError(f"{folder} is not a folder with model files")
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    if experiment:
        mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"{model}-binaries") as parent:
        mlflow.log_artifacts(str(folder), artifact_path=artifact_path)
        with (
            mlflow.start_run(run_name=f"{model}-pyfunc", nested=True) as child,
            tempfile.TemporaryDirectory() as scratch,
        ):
            context = Path(scratch) / "model_context.json"
            context.write_text(json.dumps({"run_id": context_run_id or parent.info.run_id}))
            if layout == "mlflow3":
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=LlmFromDataset(),
                    artifacts={CONTEXT_ARTIFACT: str(context)},
                    pip_requirements=serving_requirements(),
                )
                version = mlflow.register_model(info.model_uri, model)
            else:
                saved = Path(scratch) / "model"
                mlflow.pyfunc.save_model(
                    path=str(saved),
                    python_model=LlmFromDataset(),
                    artifacts={CONTEXT_ARTIFACT: str(context)},
                    pip_requirements=serving_requirements(),
                )
                mlflow.log_artifacts(str(saved), artifact_path="model")
                try:
                    client.create_registered_model(model)
                except mlflow.exceptions.MlflowException as exc:
                    if "RESOURCE_ALREADY_EXISTS" not in str(exc):
                        raise
                version = client.create_model_version(
                    model, f"{child.info.artifact_uri}/model", run_id=child.info.run_id
                )
    if alias:
        client.set_registered_model_alias(model, alias, str(version.version))
    return PublishedModel(model, str(version.version), parent.info.run_id, child.info.run_id)
