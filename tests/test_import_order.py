"""Imports flow one way: each unit of keras_bn imports only the units before it.

The order is written once, here. Every module under `keras_bn/` is parsed
with `ast`, and every import of a keras_bn module (at module level or inside
a function) must name the module's own unit or an earlier one. `import
keras_bn` and `from keras_bn import NAME` resolve through the package's lazy
public names (`keras_bn.PUBLIC_NAMES`) to the module that owns NAME.
"""

import ast
from pathlib import Path

import pytest

import keras_bn

# (unit, module prefixes), lowest first. General utilities sit below
# everything: values and choices, timers, staged writes, the one reader of
# Keras internals, data loading, argparse number types.
IMPORT_ORDER = (
    (
        "general",
        (
            "keras_bn",  # the package itself: lazy names only, imports nothing
            "keras_bn.defaults",
            "keras_bn.argument_types",
            "keras_bn.timing",
            "keras_bn.staging",
            "keras_bn.keras_adapter",
            "keras_bn.keras_objects",
            "keras_bn.data",
            "keras_bn.text_table",
        ),
    ),
    ("math", ("keras_bn.backends", "keras_bn.ops", "keras_bn.rounding_bounds")),
    ("layer", ("keras_bn.layers",)),
    (
        "population, conversion, freezing",
        (
            "keras_bn.population",
            "keras_bn.conversion",
            "keras_bn.freezing",
            "keras_bn.stand_in_statistics",
            "keras_bn.models",
        ),
    ),
    ("folding", ("keras_bn.folding",)),
    ("quantization", ("keras_bn.quantization",)),
    ("export", ("keras_bn.export",)),
    ("bench", ("keras_bn.bench",)),
    ("demo", ("keras_bn.demo",)),
    ("cli", ("keras_bn.cli",)),
)

PACKAGE = Path(keras_bn.__file__).parent


def unit_of(module: str) -> int:
    """The index in `IMPORT_ORDER` of the longest prefix matching `module`.

    `keras_bn` itself matches only the package, so a new module must be
    placed in the order before the test passes.
    """
    matches = [
        (len(prefix), index)
        for index, (_, prefixes) in enumerate(IMPORT_ORDER)
        for prefix in prefixes
        if module == prefix
        or (prefix != "keras_bn" and module.startswith(prefix + "."))
    ]
    if not matches:
        raise AssertionError(f"{module} belongs to no unit of IMPORT_ORDER")
    return max(matches)[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, keras_bn module) for every import in `source`, a module of `package`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.append((node.lineno, resolve(base, alias.name)))
    return [(line, name) for line, name in found if name.split(".")[0] == "keras_bn"]


def resolve(base: str, name: str) -> str:
    """The module `from base import name` loads: a submodule, or base itself."""
    if base == "keras_bn" and name in keras_bn.PUBLIC_NAMES:
        return keras_bn.PUBLIC_NAMES[name]
    candidate = f"{base}.{name}"
    as_path = PACKAGE.parent.joinpath(*candidate.split("."))
    if as_path.with_suffix(".py").exists() or (as_path / "__init__.py").exists():
        return candidate
    return base


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_a_module_imports_only_its_own_unit_and_earlier_ones(path):
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    own = unit_of(module)
    later = [
        f"line {line}: {name} ({IMPORT_ORDER[unit_of(name)][0]})"
        for line, name in imported_modules(path.read_text(), package)
        if unit_of(name) > own
    ]
    assert not later, f"{module} ({IMPORT_ORDER[own][0]}) imports later units: {later}"


def test_the_checker_sees_function_local_and_relative_imports():
    source = (
        "from . import weights\n"
        "def f():\n"
        "    from keras_bn.cli import main\n"
        "    import keras_bn.export.parity\n"
    )
    found = imported_modules(source, "keras_bn.folding")
    assert found == [
        (1, "keras_bn.folding.weights"),
        (3, "keras_bn.cli"),
        (4, "keras_bn.export.parity"),
    ]
    assert [IMPORT_ORDER[unit_of(name)][0] for _, name in found] == [
        "folding",
        "cli",
        "export",
    ]
