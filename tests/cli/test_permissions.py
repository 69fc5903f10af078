"""A file the user may not read or a directory they may not write is exit 4.

The message says "Permission denied" and names the path as the user typed it:
never "not a Keras model" (what a loader says of a file it could not read),
never the hidden temporary name of a staged write.

The test runner is often root, whom file modes do not stop: the command then
runs under `setpriv` without the two capabilities that let root read and
write anything (`CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`), so that modes
apply to it as to anyone.
"""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from keras_bn import defaults
from keras_bn.defaults import STATUS
from tests.helpers.cli import run_script, stand_in_model_file

WITHOUT_OVERRIDE = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


def as_an_ordinary_user() -> tuple[str, ...]:
    """The command prefix under which file modes apply to this process."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("root without setpriv: file modes cannot be made to apply")
    probe = subprocess.run([*WITHOUT_OVERRIDE, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"setpriv cannot drop capabilities here: {probe.stderr!r}")
    return WITHOUT_OVERRIDE


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("permissions")
    model = stand_in_model_file(directory, seed=9)
    shutil.copy(model, directory / "unreadable.keras")
    rng = np.random.default_rng(9)
    np.save(directory / "unreadable.npy", rng.normal(size=(8, 8, 8, 1)))
    (directory / "read_only").mkdir()
    for name in ("unreadable.keras", "unreadable.npy"):
        os.chmod(directory / name, 0)
    os.chmod(directory / "read_only", 0o555)
    return directory


@pytest.mark.parametrize(
    "argv, named",
    [
        (["fold", "unreadable.keras", "-o", "out.keras"], "unreadable.keras"),
        (
            ["recalibrate", "model.keras", "--data", "unreadable.npy", "--dry-run"],
            "unreadable.npy",
        ),
        (
            ["export", "model.keras", "--population-data", "unreadable.npy"],
            "unreadable.npy",
        ),
        (["fold", "model.keras", "-o", "read_only/out.keras"], "read_only/out.keras"),
    ],
    ids=["unreadable_model", "unreadable_data", "unreadable_data_2", "unwritable_dir"],
)
def test_permission_denied_is_exit_4_naming_the_users_path(argv, named, files):
    result = run_script(*argv, "--json", "-q", cwd=files, prefix=as_an_ordinary_user())
    assert result.returncode == defaults.EXIT_FILE_SYSTEM, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("keras-bn")]
    assert line.endswith(f"error: Permission denied: {named!r}"), line
    assert ".partial" not in line
    assert json.loads(result.stdout)["status"] == STATUS[defaults.EXIT_FILE_SYSTEM]
    assert sorted(os.listdir(files / "read_only")) == []
    assert not (files / "out.keras").exists()
