"""The shape of ``nbhelpers`` as a whole (its ``__init__``): modules named after stages,
imports at the top, every name documented, no warning hidden; ``tests/tools/test_structure.py``
holds the imports to the package docstring's order.

``nbhelpers`` is what the notebooks and their Ray workers import. These checks keep
it small and readable as it grows: a learner who follows a name into it must find
a short module, and the tools around the notebooks live in ``tools/``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "nbhelpers"
MODULES = {path.stem: path for path in sorted(PACKAGE.glob("*.py")) if path.stem != "__init__"}
DEFERRED_IMPORTS = {
    "transformers",
    "torchmetrics",
    "pillow_heif",
    "huggingface_hub",
    "skimage",
    "matplotlib",
}
"""Heavy or optional libraries that a module may import inside the function that needs them.

scikit-image and matplotlib hold the sample photos: the Ray workers that read images
from a folder or a bucket never need to import them.
"""


def tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))


def imported_modules(node: ast.AST) -> set[str]:
    """The ``nbhelpers`` modules that ``node`` imports, at any depth."""
    found = set()
    for child in ast.walk(node):
        if isinstance(child, ast.ImportFrom) and child.module:
            if child.module == "nbhelpers":
                found |= {alias.name for alias in child.names if alias.name in MODULES}
            elif child.module.startswith("nbhelpers."):
                found.add(child.module.split(".")[1])
        elif isinstance(child, ast.Import):
            found |= {a.name.split(".")[1] for a in child.names if a.name.startswith("nbhelpers.")}
    return found


def test_imports_are_at_module_level_unless_they_defer_a_heavy_library():
    hidden = []
    for name in MODULES:
        for function in ast.walk(tree(name)):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                    if (module or "").split(".")[0] not in DEFERRED_IMPORTS:
                        hidden.append(f"{name}.{function.name}: {module}")
    assert not hidden, f"imports hidden inside functions: {hidden}"


def test_no_tools_in_the_package():
    assert not {"doctor", "prefetch", "jobs", "report", "utils", "pipeline"} & set(MODULES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_public_function_and_class_has_a_docstring(name):
    missing = [
        node.name
        for node in ast.walk(tree(name))
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
        and not node.name.startswith("_")
        and not ast.get_docstring(node)
    ]
    assert ast.get_docstring(tree(name)), f"{name} has no module docstring"
    assert not missing, f"{name}: no docstring on {missing}"


def test_the_package_docstring_lists_every_module():
    import nbhelpers
    from nbhelpers import lessons

    listed = {line.split("``")[1] for line in nbhelpers.__doc__.splitlines() if "``" in line}
    assert listed <= set(MODULES), listed - set(MODULES)
    # A lesson's model module is listed by its catalog entry; every other module here.
    unlisted = set(MODULES) - listed
    assert unlisted <= {entry.model_module for entry in lessons.NOTEBOOKS}, unlisted


def test_the_maintainers_page_lists_every_module():
    text = (Path(__file__).resolve().parents[2] / "docs" / "maintenance.md").read_text()
    listed = set(re.findall(r"`(\w+)`", text.split("## Adding a notebook")[0]))
    from nbhelpers import lessons

    models = {entry.model_module for entry in lessons.NOTEBOOKS}
    assert set(MODULES) - models <= listed, set(MODULES) - models - listed


def test_no_warning_of_ray_is_hidden_by_the_package():
    """A warning that can be true (a pool that starves its read stage) must reach the learner:
    nbhelpers filters no log record, and no warning but PIL's about images it decodes reduced."""
    for module in sorted(PACKAGE.glob("*.py")):
        for line in module.read_text().splitlines():
            if any(hiding in line for hiding in ("filterwarnings(", "simplefilter(", "addFilter(")):
                assert "Image.DecompressionBombWarning" in line, f"{module.name}: {line.strip()}"
