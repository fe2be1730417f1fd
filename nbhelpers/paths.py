"""File names as text and back: a name that is not valid UTF-8 travels as ``\\xNN`` escapes.

Old cameras and unzipped archives leave names in Latin-1 or cp437, which Arrow, Parquet and
JSON refuse. Every stage that shows or stores a path uses :func:`printable_path`; the one that
opens the file uses :func:`path_on_disk`.
"""

from __future__ import annotations

import os
import re


def printable_path(path: str) -> str:
    """``path`` as valid UTF-8 text: bytes of a name that is not UTF-8 become ``\\xNN``.

    Old cameras and unzipped archives leave names in Latin-1 or cp437, which Arrow,
    Parquet and JSON refuse. :func:`path_on_disk` gives back the real name.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return path


def path_on_disk(path: str) -> str | bytes:
    """The name to open for a path from :func:`printable_path` (the bytes, where escaped)."""
    if "\\x" not in path or os.path.lexists(path):
        return path
    raw = re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m.group(1), 16)]), path.encode())
    return raw if os.path.lexists(raw) else path
