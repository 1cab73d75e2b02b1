"""Fresh virtualenvs for the tests that run what users run, outside the test environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    """The commands of the README's first code block, comments removed."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block is not None, "the README has no bash block"
    lines = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line]


class FreshVenv:
    """A virtualenv made by `python -m venv`, with only what its commands install."""

    def __init__(self, path: Path) -> None:
        self.path = path
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    def env(self, **extra: str) -> dict[str, str]:
        """A newcomer's shell: the venv first on PATH, nothing of the test environment's own."""
        keep = {"HOME", "LANG", "LC_ALL", "TMPDIR", "TERM", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"}
        env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("PIP_")}
        env.update(
            PATH=f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            VIRTUAL_ENV=str(self.path),
            PIP_DISABLE_PIP_VERSION_CHECK="1",
        )
        env.update(extra)
        return env

    def packages(self) -> set[str]:
        listed = subprocess.run(
            [str(self.bin / "python"), "-m", "pip", "list", "--format=freeze"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return {line.split("==")[0].lower().replace("_", "-") for line in listed.splitlines()}

    def size_mb(self) -> float:
        """Space on disk, as `du` counts it (blocks, each hard-linked file once)."""
        seen: set[int] = set()
        total = 0
        for path in self.path.rglob("*"):
            info = path.lstat()
            if info.st_ino not in seen:
                seen.add(info.st_ino)
                total += info.st_blocks * 512
        return total / 1e6


def readme_blocks(section: str) -> list[tuple[str, str]]:
    """The fenced blocks (language, text) of one `## ` section of the README, in order."""
    text = (REPO / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w*)\n(.*?)```", body, re.S)
