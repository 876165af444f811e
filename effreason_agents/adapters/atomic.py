"""Atomic file writes: a temporary file beside the target, flushed and fsynced, then
``os.replace``. A reader sees the old file or the whole new one, never a partial file, and
an error (or Ctrl-C) removes the temporary file. :func:`write_dir` does the same for an
artifact directory."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "jsonable", "write_bytes", "write_dir", "write_json", "write_with"]


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, shared: bool = False, **open_kw: Any) -> Iterator[IO[Any]]:
    """A file object that becomes ``path`` when the ``with`` block ends without an error.

    ``mode`` is ``"w"`` (text, UTF-8 unless ``encoding`` is given) or ``"wb"``. ``shared``
    makes the file world-readable (0644; temporary files start as 0600). The parent
    directory is created."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if "b" not in mode:
        open_kw.setdefault("encoding", "utf-8")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kw) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if shared:
            os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes, *, shared: bool = False) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb", shared=shared) as fh:
        fh.write(data)


def write_with(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(binary_file)`` (e.g. ``np.savez``) and make the result ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        write(fh)


def write_json(path: str | Path, data: Any, *, shared: bool = False, **dump_kw: Any) -> None:
    """``data`` as indented JSON (``dump_kw`` as for :func:`json.dumps`) plus a newline, atomically."""
    dump_kw.setdefault("indent", 2)
    write_bytes(path, (json.dumps(data, **dump_kw) + "\n").encode("utf-8"), shared=shared)


def write_dir(path: str | Path, fill: Callable[[Path], Any], *, marker: str, what: str,
              error: type[Exception] = ValueError) -> Path:
    """Write an artifact directory: ``fill(tmp)`` writes the files into a fresh temporary
    directory beside ``path``, which then replaces ``path`` by renames (the old one, if
    any, moved aside first and put back if the final rename fails). A failure anywhere
    leaves neither a partial artifact nor a changed old one. An existing ``path`` that is
    a file, or a non-empty directory without the ``marker`` file (so not a ``what``
    artifact), is refused with ``error``. Returns ``path``."""
    target = Path(path).expanduser()
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        if not target.is_dir():
            raise error(f"{target} exists and is not a directory; choose another output path")
        if any(target.iterdir()) and not (target / marker).is_file():
            raise error(f"{target} exists, is not empty and is not a {what}; choose another output path")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    old: Path | None = None
    try:
        fill(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=parent))
            os.rmdir(old)
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old is not None:
                os.replace(old, target)
                old = None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def jsonable(x: Any) -> Any:
    """``x`` with mappings' keys as strings, sequences and numpy arrays as lists, numpy
    scalars as Python numbers and NaN / infinite floats as ``None``: what a JSON artifact
    card may hold."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "tolist") and hasattr(x, "dtype"):  # numpy arrays and scalars, without importing numpy
        return jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
