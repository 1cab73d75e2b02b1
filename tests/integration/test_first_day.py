"""An operator's first day, as a person meets it: the real `syncd run` process, its log,
its page and its metrics, for the mistakes people make in a config."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from syncd.app.embedded import free_port
from tests.support.cli import clean_env
from tests.support.daemon import WAIT, get, scraped, wait_until, write_config
from tests.support.models import publish, unique_name


def test_a_misspelled_model_and_an_unknown_variable_are_named(
    mlflow_server: Any, tmp_path: Path
) -> None:
    name = unique_name("Tiny")
    publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    # two neighbouring letters swapped, as people do (two that differ: "...33" swapped is no typo)
    at = max(i for i in range(len(name) - 1) if name[i] != name[i + 1])
    typo = name[:at] + name[at + 1] + name[at] + name[at + 2 :]
    port = free_port()
    config = write_config(
        tmp_path / "syncd.yaml",
        {
            "poll_interval": "300ms",
            "targets": [
                {
                    "name": "prod",
                    "root": str(tmp_path / "llm-models"),
                    "alias": "production",
                    "models": [typo, "Other-*"],
                }
            ],
            "http": {"host": "127.0.0.1", "port": port},
            "mlflow": {"tracking_uri": mlflow_server.url},
        },
    )
    env = clean_env(SYNCD_PACKAGE="/opt/syncd.whl")
    log = tmp_path / "syncd.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "syncd", "run", "--config", str(config)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT
        while get(url + "/readyz")[0] != 200:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        status = json.loads(get(url + "/api/status")[1])
        assert status["targets"][0]["missing_models"] == {typo: name}
        assert scraped(get(url + "/metrics")[1], 'syncd_missing_models{target="prod"}') == 1.0
        readyz = get(url + "/readyz")[1]
        assert f"not registered: {typo}" in readyz
        page = get(url + "/")[1]
        assert f"no registered model is named <code>{typo}</code>" in page
        assert f"did you mean <code>{name}</code>" in page
        # three more polls (counted by the process itself): the warning is not repeated
        polls = 'syncd_registry_polls_total{result="success",target="prod"}'
        before = scraped(get(url + "/metrics")[1], polls) or 0.0
        wait_until(
            lambda: (scraped(get(url + "/metrics")[1], polls) or 0.0) >= before + 3,
            "three more polls",
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=WAIT)
    text = log.read_text()
    assert "WARNING syncd" in text
    assert f"no registered model is named {typo!r} (did you mean {name!r}?)" in text
    assert text.count("no registered model is named") == 1  # once, not at every poll
    assert "SYNCD_PACKAGE" not in text  # read by config/domino/app.sh: known
