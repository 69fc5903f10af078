"""`--json`: exactly one JSON document on stdout in every outcome, with a `status`.

Through the installed script: success, a parity failure, bad input, a
file-system error and a usage error each give a stdout that `json.loads`
parses whole, and the exit status docs/cli.md documents.
"""

import json

import pytest

from keras_bn import defaults
from tests.helpers.cli import run_script, stand_in_model_file


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return stand_in_model_file(tmp_path_factory.mktemp("model"), seed=5)


def outcome(result) -> dict:
    document = json.loads(result.stdout)  # "Extra data" if there are two
    assert document["status"] == defaults.STATUS[result.returncode], document
    if result.returncode != defaults.EXIT_OK:
        assert document["exit_code"] == result.returncode
        lines = result.stderr.splitlines()
        (line,) = [x for x in lines if x.startswith("keras-bn")]
        assert document["error"] in line
    return document


def test_success(model_file, tmp_path):
    out = tmp_path / "folded.keras"
    result = run_script("fold", model_file, "-o", out, "--json")
    assert result.returncode == defaults.EXIT_OK, result.stderr
    assert outcome(result)["output"] == str(out)
    assert out.is_file()


def test_parity_failure(model_file, tmp_path):
    # No fold of float32 weights is exact: a zero tolerance must fail.
    out = tmp_path / "folded.keras"
    result = run_script(
        "fold", model_file, "-o", out, "--rtol", "0", "--atol", "0", "--json"
    )
    assert result.returncode == defaults.EXIT_PARITY, result.stderr
    assert outcome(result)["status"] == "parity_failure"
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, code",
    [
        (["fold", "{tmp}/absent.keras"], defaults.EXIT_BAD_INPUT),
        (["export", "{model}", "-o", "{tmp}/blocker/out"], defaults.EXIT_FILE_SYSTEM),
        (["fold", "{model}", "--rtol", "lots"], defaults.EXIT_USAGE),
    ],
    ids=["bad_input", "file_system_error", "usage_error"],
)
def test_failures(argv, code, model_file, tmp_path):
    (tmp_path / "blocker").write_text("a file where a directory should be")
    argv = [a.format(tmp=tmp_path, model=model_file) for a in argv]
    result = run_script(*argv, "--json")
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    outcome(result)
