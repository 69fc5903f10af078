"""The recipes in export/ parse their arguments and the digits recipe runs.

The recipes are what a user copies; they only call the library
(`keras_bn.models`, `keras_bn.data`, `keras_bn.export.export_files`), whose
exports the export tests check, so this checks the recipes' own part: the
command line and that a run writes the files the docstring promises.
"""

import importlib.util
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[1] / "export"


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_recipe_says_how_to_run_it():
    for path in sorted(RECIPES.glob("*.py")):
        assert f"python export/{path.name}" in load_recipe(path.name).__doc__, path


def test_applications_recipe_takes_a_keras_applications_name(capsys):
    recipe = load_recipe("applications.py")
    args = recipe.parse_args(["MobileNetV2", "--size", "96", "--out", "o"])
    assert (args.name, args.size, args.out) == ("MobileNetV2", 96, Path("o"))
    with pytest.raises(SystemExit):
        recipe.parse_args(["NotAModel"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.slow
def test_digits_recipe_writes_the_three_files(tmp_path, capsys):
    load_recipe("digits.py").main(["--epochs", "1", "--out", str(tmp_path)])
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["digits_cnn.onnx", "digits_cnn.tflite", "digits_cnn_int8.tflite"]
    assert "held-out accuracy" in capsys.readouterr().out
