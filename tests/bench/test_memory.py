"""`keras-bn bench memory`: the convention, and a measurement checked against
an allocation of known size."""

import sys

import pytest

from keras_bn import cli, defaults
from keras_bn.bench.memory import peak_rss_mb


def test_help_shows_the_common_flags_under_the_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "memory", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: keras-bn bench memory")
    assert "--json" in out and "--sizes" in out


def test_a_size_below_the_applications_minimum_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "memory", "--sizes", "16"])
    assert exit_info.value.code == defaults.EXIT_USAGE
    assert "must be at least 32" in capsys.readouterr().err


@pytest.mark.parametrize("megabytes", [200, 400])
def test_peak_rss_sees_an_allocation_of_known_size(megabytes):
    allocate = f"import numpy; a = numpy.ones({megabytes * 1_000_000 // 8}); a += 1"
    baseline = peak_rss_mb([sys.executable, "-c", "import numpy"])
    peak = peak_rss_mb([sys.executable, "-c", allocate])
    # The array is touched (ones, then +=), so every page is resident once;
    # the interpreter and NumPy are the same in both processes.
    assert peak - baseline == pytest.approx(megabytes, rel=0.1)


def test_a_failing_command_is_one_line():
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        peak_rss_mb([sys.executable, "-c", "1 / 0"])
