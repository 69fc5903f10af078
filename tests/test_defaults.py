"""Every default and choice has one home, `keras_bn.defaults`, that the library,
the command line and the benchmarks all read."""

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tf2onnx

import keras_bn
from keras_bn import defaults, demo
from keras_bn.cli import build_parser
from keras_bn.export import EXPORT_FORMATS, export_files, to_onnx

PACKAGE = Path(keras_bn.__file__).parent


def test_defaults_and_the_parser_import_no_tensorflow():
    code = (
        "import sys, keras_bn.defaults, keras_bn.argument_types, keras_bn.cli; "
        "keras_bn.cli.build_parser(); "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]


def test_the_library_uses_the_defaults():
    assert EXPORT_FORMATS is defaults.EXPORT_FORMATS
    assert inspect.signature(to_onnx).parameters["opset"].default == 17
    assert inspect.signature(export_files).parameters["opset"].default == 17
    assert defaults.DEFAULT_OPSET == 17
    run_demo = inspect.signature(demo.run_demo).parameters
    assert run_demo["epochs"].default == defaults.DEMO_EPOCHS == 8
    assert run_demo["out_dir"].default == defaults.DEMO_OUT == "export/out"


def test_the_opset_range_is_what_tf2onnx_knows():
    known = tf2onnx.constants.OPSET_TO_IR_VERSION
    assert all(o in known for o in range(defaults.MIN_OPSET, defaults.MAX_OPSET + 1))


@pytest.mark.parametrize(
    "argv, name, expected",
    [
        (["export", "m.keras"], "opset", defaults.DEFAULT_OPSET),
        (["export", "m.keras"], "format", "all"),
        (["demo"], "epochs", defaults.DEMO_EPOCHS),
        (["demo"], "out", defaults.DEMO_OUT),
    ],
)
def test_the_command_line_defaults_are_the_defaults(argv, name, expected):
    assert getattr(build_parser().parse_args(argv), name) == expected


def tuple_literals(path: Path) -> list[tuple]:
    """Every tuple or list literal of constants in the module at `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Tuple | ast.List) and node.elts:
            if all(isinstance(e, ast.Constant) for e in node.elts):
                found.append(tuple(e.value for e in node.elts))
    return found


@pytest.mark.parametrize(
    "choices",
    [
        defaults.QUANTIZE_MODES,
        defaults.QUANTIZE_CHOICES,
        defaults.EXPORT_FORMATS,
        defaults.FORMAT_CHOICES,
    ],
    ids=["quantize_modes", "quantize_choices", "export_formats", "format_choices"],
)
def test_no_module_copies_a_set_of_choices(choices):
    copies = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "defaults.py" and choices in tuple_literals(path)
    ]
    assert not copies, f"{choices} is written out again in {copies}"


@pytest.mark.parametrize(
    ("preamble", "user_value", "expected"),
    [
        ("", None, "1"),  # a library user who never heard of oneDNN
        ("", "0", "0"),  # the user's choice stands
        ("import tensorflow\n", None, None),  # too late to change: left alone
    ],
)
def test_importing_keras_bn_sets_the_tensorflow_environment_first(
    preamble, user_value, expected
):
    """Issue 17, case 7: `channels_first` folds need oneDNN on CPUs without
    AVX-512, so `import keras_bn` sets it unless the user chose or TF is loaded."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if user_value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = user_value
    code = preamble + (
        "import os, keras_bn\nprint(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == str(expected)
