"""tools/structure.py: the package's modules, floors and imports, read from its own code."""

from __future__ import annotations

import re

import nbhelpers
from tools import structure


def test_each_module_imports_only_modules_listed_above_it_in_the_package_docstring():
    listed = re.findall(r"^- ``(\w+)``", nbhelpers.__doc__, flags=re.M)
    imports = structure.package_imports(structure.PACKAGE)
    assert sorted(listed) == sorted(imports)  # every module listed once, and only those
    for position, name in enumerate(listed):
        assert imports[name] <= set(listed[:position]), (name, imports[name])


def test_floors_count_the_longest_chain_of_imports():
    imports = {"a": set(), "b": {"a"}, "c": {"a", "b"}, "d": set()}
    assert structure.floors(imports) == {"a": 1, "b": 2, "c": 3, "d": 1}


def test_an_import_circle_fails_with_exit_status_1(tmp_path, capsys):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "one.py").write_text("from pkg import two\n")
    (package / "two.py").write_text("from pkg.one import x\n")
    assert structure.main(["--package", str(package)]) == 1
    assert structure.package_imports(package) == {"one": {"two"}, "two": {"one"}}


def test_the_table_has_a_row_per_module_with_its_lines(tmp_path, capsys):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("X = 1\n")
    (package / "high.py").write_text("import pkg.low\n\nY = pkg.low.X\n")
    assert structure.main(["--package", str(package)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:-1]]
    assert rows == [["high", "3", "2", "low"], ["low", "1", "1"]]
