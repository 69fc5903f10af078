"""docs/cli.md comes from the code: its exit-status table is `keras_bn.defaults`'."""

import re
from pathlib import Path

from keras_bn import defaults

CLI_DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def documented_exit_statuses() -> list[tuple[int, str, str]]:
    """The rows of the table under `## Exit status` in docs/cli.md."""
    section = CLI_DOC.read_text().split("## Exit status", 1)[1]
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| (.+?) \|$", section, re.MULTILINE)
    return [(int(code), status, meaning) for code, status, meaning in rows]


def test_the_exit_status_table_is_the_defaults_table():
    assert documented_exit_statuses() == list(defaults.EXIT_STATUSES)


def test_the_json_status_names_are_the_table_s():
    assert defaults.STATUS == {
        code: status for code, status, _ in documented_exit_statuses()
    }
