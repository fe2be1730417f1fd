"""``make lock``: pins, with a Python marker where a release does not support every Python."""

from __future__ import annotations

from tools.lock import constraint_lines, python_marker


def test_a_release_for_every_supported_python_has_no_marker():
    assert python_marker(">=3.9") == ""
    assert python_marker(None) == ""
    assert python_marker(">=3.10,<4") == ""


def test_a_release_for_some_pythons_is_pinned_for_those_only():
    assert python_marker(">=3.11") == 'python_version >= "3.11"'
    assert python_marker(">=3.10.2") == ""  # a later 3.10 release fits
    assert python_marker("<3.13,>=3.8") == 'python_version <= "3.12"'
    assert python_marker(">=3.11,<3.13") == 'python_version >= "3.11" and python_version <= "3.12"'
    assert python_marker(">=3.14") is None


def test_lines_are_sorted_normalised_and_skip_the_unusable():
    report = [
        {"metadata": {"name": "PyYAML", "version": "6.0.4", "requires_python": ">=3.8"}},
        {"metadata": {"name": "numpy", "version": "2.4.6", "requires_python": ">=3.11"}},
        {"metadata": {"name": "future_only", "version": "1.0", "requires_python": ">=3.15"}},
    ]
    assert constraint_lines(report) == [
        'numpy==2.4.6; python_version >= "3.11"',
        "pyyaml==6.0.4",
    ]
