"""Atomic file writes: a temporary file beside the target, flushed and fsynced, then
``os.replace``. A reader sees the old file or the whole new one, never a partial file, and
an error (or Ctrl-C) removes the temporary file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "write_bytes", "write_json", "write_with"]


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
