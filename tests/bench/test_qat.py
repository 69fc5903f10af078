"""`keras-bn bench qat`: its flags are checked before any training."""

from keras_bn import cli, defaults


def test_freezing_after_more_epochs_than_qat_runs_is_refused_by_flag_name(capsys):
    code = cli.main(["bench", "qat", "--qat-epochs", "2", "-q"])
    assert code == defaults.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "--freeze-bn-after must be at most --qat-epochs" in err
    assert "--freeze-bn-after 3 with --qat-epochs 2" in err
