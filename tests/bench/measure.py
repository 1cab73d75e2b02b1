"""Run one command and print its wall time, CPU seconds and peak RSS as JSON.

A fresh, small interpreter spawns the command: ru_maxrss counts what a forked child holds
before exec, so spawning from the (large) benchmark process would report the benchmark's own
memory for every tool.
Usage: python -m tests.bench.measure CMD [ARG...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time


def main(command: list[str]) -> int:
    # stderr goes to a file, not a pipe: a tool that writes more than a pipe holds (mlflow's
    # progress bar over 2,000 files) would block on a pipe nobody reads until it exits.
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "cpu": usage.ru_utime + usage.ru_stime,
                "user": usage.ru_utime,
                "rss_mb": usage.ru_maxrss / 1024,
                "code": code,
                "stderr": stderr[-2000:],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
