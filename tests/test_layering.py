"""The house rules on imports, read from the source (nothing is imported to check them).

A module "reaches" another when it imports it, directly or through the modules it imports
(package `__init__` files included, except lrkit's own, which re-exports everything).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(name: str) -> set[str]:
    """Every module `name` imports (outside `if TYPE_CHECKING:` blocks), as dotted names."""
    path = _module_file(name)
    if path is None:
        return set()
    tree = ast.parse(path.read_text(), str(path))
    skip = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from lrkit import vision` imports the module lrkit.vision
            found |= {
                f"{node.module}.{a.name}"
                for a in node.names
                if _module_file(f"{node.module}.{a.name}")
            }
    return found


def _with_parents(name: str) -> set[str]:
    """`name` and the packages whose `__init__` runs first (lrkit's own left out)."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts) + 1)} | {name}


def reached(start: str) -> set[str]:
    """Every module importing `start` runs, by the rule in this file's docstring."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for imported in _imports(name):
            if imported.startswith("lrkit."):
                todo.extend(_with_parents(imported) - seen)
            else:
                seen.add(imported)
    return seen


@pytest.mark.parametrize("module", ["lrkit.learner", "lrkit.checkpoint", "lrkit.export_file"])
def test_the_generic_learner_and_its_files_know_nothing_of_images(module):
    bad = {"PIL", "lrkit.data.augment", "lrkit.data.image_input", "lrkit.vision"}
    assert not reached(module) & bad, sorted(reached(module) & bad)


def test_models_know_nothing_of_files_on_disk_or_data():
    models = [p.stem for p in (SRC / "lrkit" / "models").glob("*.py")]
    for name in models:
        module = "lrkit.models" if name == "__init__" else f"lrkit.models.{name}"
        data = sorted(
            m for m in reached(module) if m == "lrkit.data" or m.startswith("lrkit.data.")
        )
        assert not data, f"{module} reaches {data}"


def test_the_checker_sees_imports():  # the rules above would pass on a checker that sees none
    assert "PIL" in reached("lrkit.vision.predictor")
    assert "lrkit.data.augment" in reached("lrkit.vision")
    assert "lrkit.learner" in reached("lrkit.vision.learner")


FLAG = re.compile(r"(?<![\w-])--[a-z][\w-]*")


def _messages(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal in `path` that is not a docstring."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_library_messages_name_no_command_line_flags():
    """The CLI rewrites library errors in its flags' terms (cli_args.speak_flags); the library
    speaks Python (`num_it=5`, `trust_pickle=True`). A pip command line is not ours."""
    found = []
    for path in sorted((SRC / "lrkit").rglob("*.py")):
        rel = path.relative_to(SRC / "lrkit")
        if rel.parts[0].startswith("cli") or rel.name == "__main__.py":  # the command's launcher
            continue
        for line, text in _messages(path):
            if FLAG.search(text) and "pip install" not in text:
                found.append(f"{rel}:{line}: {text!r}")
    assert not found, found
