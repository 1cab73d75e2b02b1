"""The mutation check: is the simulation hollow? `python -m tests.sim.mutations`.

Each mutation breaks one guarantee in a scratch copy of the tree (never this checkout); the
simulation then runs over the copy, seed after seed, until an invariant catches it. A mutation
that survives the CI seeds means the simulation cannot see that guarantee. Prints, for each,
which world caught it, at which seed, and with what message.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repository
    old: str
    new: str
    world: str  # which simulation should catch it: syncer or daemon
    also: tuple[tuple[str, str, str], ...] = ()  # more (path, old, new): defences in depth


MUTATIONS = (
    Mutation(
        "publish bytes that fail their check",
        "syncd/core/verification.py",
        "        matched = [\n            label for label, value in found.items()",
        "        matched = [check.label] or [\n            label for label, value in found.items()",
        "daemon",
    ),
    Mutation(
        "write through a symlink planted in staging",
        "syncd/local/files.py",
        "    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | (0 if keep else os.O_TRUNC)",
        "    flags = os.O_RDWR | os.O_CREAT | (0 if keep else os.O_TRUNC)",
        "syncer",
        # staging's links are also set aside before a build: the second defence goes too
        also=(
            (
                "syncd/local/store.py",
                "        self.remove_links(folder)  # a link planted inside would be written"
                " through",
                "        pass",
            ),
        ),
    ),
    Mutation(
        "delete a folder syncd did not create",
        "syncd/local/swap.py",
        "    if owned:\n        _set_aside_extras(store, old, known)\n        store.discard(old)",
        "    if True:\n        store.discard(old)",
        "syncer",
    ),
    Mutation(
        "report on a folder whose pointer moved during its sync",
        "syncd/reconcile/controller.py",
        "        if self._pointers.get(key) != desired:\n            # The pointer moved",
        "        if False:\n            # The pointer moved",
        "daemon",
    ),
    Mutation(
        "lose the hooks of a move interrupted mid-hook",
        "syncd/reconcile/moves.py",
        "        if newest[1].finished:\n            return None",
        "        if True:\n            return None",
        "daemon",
    ),
    Mutation(
        "write a root another daemon holds",
        "syncd/reconcile/roots.py",
        "    def writes(self, target: str) -> bool:\n        return self.of(target).lock.held",
        "    def writes(self, target: str) -> bool:\n        return True",
        "daemon",
    ),
)


def caught(mutation: Mutation, seeds: int) -> str:
    """Apply `mutation` to a scratch copy and run its world's seeds there; what caught it."""
    with tempfile.TemporaryDirectory(prefix="syncd-mutant-") as scratch:
        copy = Path(scratch) / "tree"
        shutil.copytree(REPO / "syncd", copy / "syncd")
        shutil.copytree(
            REPO / "tests", copy / "tests", ignore=shutil.ignore_patterns("__pycache__")
        )
        for path, old, new in ((mutation.path, mutation.old, mutation.new), *mutation.also):
            target = copy / path
            source = target.read_text()
            if old not in source:
                return f"NOT APPLIED: {path} no longer has the guarded line"
            target.write_text(source.replace(old, new, 1))
        program = (
            "import sys\n"
            f"from tests.sim import {'daemon_world' if mutation.world == 'daemon' else 'world'}"
            " as sim\n"
            f"for seed in range({seeds}):\n"
            "    outcome = sim.play(seed)\n"
            "    if outcome.failure:\n"
            "        print(f'seed {seed}, event {outcome.failed_at}: {outcome.failure}')\n"
            "        sys.exit(1)\n"
            "print('survived')\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", program],
            cwd=copy,
            env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=False,
        )
        lines = (done.stdout or done.stderr).strip().splitlines()
        return lines[-1][:300] if lines else f"exit {done.returncode}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100, help="seeds per mutation")
    args = parser.parse_args()
    survived = 0
    for mutation in MUTATIONS:
        verdict = caught(mutation, args.seeds)
        survived += verdict == "survived" or verdict.startswith("NOT APPLIED")
        print(f"{mutation.name} ({mutation.world} world): {verdict}", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
