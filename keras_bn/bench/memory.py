"""Export memory: the peak resident memory of `keras-bn export --format all`.

The reference is what a user's process needs anyway: loading the `.keras`
file and running one batch through it. Each figure is the peak resident set
(`ru_maxrss`) of a fresh process, measured by a wrapper process that only
waits for it, so neither the benchmark's own TensorFlow nor an earlier
measurement counts. The target is an export peak of at most twice the
reference. Memory does not depend on the machine's load, unlike time.

The models are MobileNetV2 with `weights=None` and seeded stand-in BN
statistics (`keras_bn.stand_in_statistics`), saved as `.keras`.

Example:

    keras-bn bench memory --sizes 96 224
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET_RATIO = 2.0
COLUMNS = [
    "model",
    "size",
    "load+predict MB",
    "export MB",
    "export/load+predict",
    "target",
]
# Runs the command given as its arguments and prints the largest resident set
# of the processes it waited for, in KiB (Linux `ru_maxrss`).
PEAK_RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL,"
    " stderr=subprocess.PIPE, text=True)\n"
    "if done.returncode:\n"
    "    sys.exit((done.stderr.strip().splitlines() or ['failed'])[-1])\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def save_model(size: int, directory: Path, seed: int = 0) -> Path:
    """MobileNetV2 at `size`×`size` with stand-in statistics, saved as `.keras`."""
    from keras_bn.models import stand_in_application

    model = stand_in_application("MobileNetV2", (size, size, 3), seed=seed)
    path = directory / f"mobilenetv2_{size}.keras"
    model.save(path)
    return path


def load_and_predict(path: str, batch: int) -> None:
    """The reference workload: load the model, run one seeded batch."""
    import keras
    import numpy as np

    model = keras.models.load_model(path)
    shape = (batch, *model.inputs[0].shape[1:])
    model.predict(np.random.default_rng(0).standard_normal(shape), verbose=0)


def peak_rss_mb(command: list[str]) -> float:
    """The peak resident memory of `command` run in a fresh process, in MB.

    Raises:
        RuntimeError: The command failed; the message is its last stderr line.
    """
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_WRAPPER, *command],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"{command[:4]} failed: {done.stderr.strip()}")
    return int(done.stdout.strip()) * 1024 / 1e6


def measure(size: int, batch: int, directory: Path) -> dict:
    """One row: the reference's and the export's peak memory at `size`."""
    path = save_model(size, directory)
    reference = peak_rss_mb(
        [
            sys.executable,
            "-c",
            "import sys; from keras_bn.bench.memory import load_and_predict; "
            "load_and_predict(sys.argv[1], int(sys.argv[2]))",
            str(path),
            str(batch),
        ]
    )
    export = peak_rss_mb(
        [
            sys.executable,
            "-m",
            "keras_bn.cli",
            "export",
            str(path),
            "--format",
            "all",
            "-o",
            str(directory / f"out_{size}"),
        ]
    )
    return {
        "model": "MobileNetV2",
        "size": size,
        "load+predict MB": reference,
        "export MB": export,
        "export/load+predict": export / reference,
        "target": TARGET_RATIO,
    }


def run(args: argparse.Namespace) -> list[dict]:
    """One row per input size, the worst of `--repeats` measurements."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="keras_bn_memory_") as tmp:
        for size in args.sizes:
            measured = [
                measure(size, args.batch, Path(tmp)) for _ in range(args.repeats)
            ]
            rows.append(max(measured, key=lambda row: row["export MB"]))
    return rows
