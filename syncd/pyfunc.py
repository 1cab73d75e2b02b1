"""The endpoint side: a light pyfunc that loads binaries from the mounted dataset folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlflow.pyfunc.model import PythonModel

from syncd.core.ids import is_run_id

__all__ = ["LlmFromDataset", "model_folder"]

CONTEXT_ARTIFACT = "model_context"


def model_folder(context_file: str | Path, root: str | Path | None = None) -> Path:
    """`{LOCAL_ROOT_FOLDER or /}llm-models/{run_id}` for the run named in model_context.json."""
    run_id = str(json.loads(Path(context_file).read_text()).get("run_id"))
    if not is_run_id(run_id):
        raise ValueError(f"model_context.json run_id {run_id!r} is not a 32-hex run id")
    base = Path(root if root is not None else os.environ.get("LOCAL_ROOT_FOLDER", "/"))
    return base / "llm-models" / run_id


class LlmFromDataset(PythonModel):
    """Loads a Hugging Face folder from the dataset at start; the image carries no weights.

    Without `transformers` installed (as in syncd's own tests) it only locates the folder and
    answers with the file list, which is what an endpoint's health check needs.
    """

    def load_context(self, context: Any) -> None:
        self.folder = model_folder(context.artifacts[CONTEXT_ARTIFACT])
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder} is not there: has syncd synced this run?")
        self.pipeline: Any = None
        try:
            from transformers import pipeline
        except ImportError:
            return
        self.pipeline = pipeline("text-generation", model=str(self.folder))

    def predict(
        self, context: Any, model_input: list[str], params: dict[str, Any] | None = None
    ) -> list[str]:
        """The generated text for each prompt (or, without transformers, the folder's files).

        A concrete return type lets MLflow infer the output schema (`list[Any]` makes it warn
        at every log_model).
        """
        if self.pipeline is None:
            return sorted(str(path.relative_to(self.folder)) for path in self.folder.rglob("*"))
        outputs = [self.pipeline(prompt, **(params or {})) for prompt in model_input]
        return [str(output[0]["generated_text"]) for output in outputs]
