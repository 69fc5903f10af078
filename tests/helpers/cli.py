"""Running the installed `keras-bn` console script as a user does."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path


def script() -> str:
    """The `keras-bn` script of this environment (`pip install -e .`)."""
    beside = Path(sys.executable).parent / "keras-bn"
    found = str(beside) if beside.exists() else shutil.which("keras-bn")
    assert found, "the keras-bn console script is not installed (pip install -e .)"
    return found


def script_environment(**changes: str | None) -> dict[str, str]:
    """The user's environment as it is, with `changes` (`None` unsets).

    TensorFlow's log level is *not* set here (the test session sets one in
    `os.environ`): the command line must be quiet on its own.
    """
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_script(
    *args, cwd=None, timeout=300, prefix=(), **env_changes: str | None
) -> subprocess.CompletedProcess:
    """`keras-bn ARGS` in a subprocess, with the user's environment as it is.

    Args:
        prefix: A command to run the script under (`setpriv ...`).
        env_changes: Environment variables to set, or to unset with `None`.
    """
    env = script_environment(**env_changes)
    return subprocess.run(
        [*prefix, script(), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


# tqdm moves the cursor with ANSI escapes between bars.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def stderr_lines_besides_progress(stderr: str, *bars: str) -> list[str]:
    """The lines of `stderr` that are neither blank nor a progress bar in `bars`."""
    lines = re.split(r"[\r\n]", ANSI_ESCAPE.sub("", stderr))
    return [line for line in lines if line.strip() and not line.startswith(bars)]


def stand_in_model_file(directory: Path, seed: int) -> Path:
    """The demo's CNN with seeded weights and stand-in BN statistics, saved."""
    import keras

    from keras_bn.models import digits_cnn
    from keras_bn.stand_in_statistics import set_stand_in_statistics

    keras.utils.set_random_seed(seed)
    model = digits_cnn((8, 8, 1), 10)
    set_stand_in_statistics(model, seed=seed)
    path = Path(directory) / "model.keras"
    model.save(path)
    return path
