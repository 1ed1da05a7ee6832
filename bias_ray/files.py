"""Atomic file writes, as a database makes them: a temporary name, fsync, rename, fsync of the folder.

A crash (SIGKILL, a lost node, a full disk) at any point leaves either the old file or the new one,
never half of one, and a reader never sees a file before its bytes are on disk. Every stage writes
its outputs through these (the generation store, the results table, the report, the analysis).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (the file's bytes first, then its directory entry)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, obj: Any, **dumps: Any) -> None:
    write_bytes(path, json.dumps(obj, **({"indent": 2} | dumps)).encode())


def write_frame(frame: Any, path: Path) -> None:
    """A DataFrame as ``.parquet`` or ``.csv`` (by the suffix), atomically."""
    buffer = io.BytesIO()
    if Path(path).suffix == ".csv":
        frame.to_csv(buffer, index=False)
    else:
        frame.to_parquet(buffer, index=False)
    write_bytes(path, buffer.getvalue())


def put_aside(src: Path, aside: Path, name: str, reason: dict[str, Any], copy: bool = False) -> Path:
    """Move (or copy) a broken ``src`` into ``aside`` under a unique time-stamped ``name``, and add
    ``reason`` (a JSON object; ``moved_to`` or ``copied_to`` is filled in) to ``aside/reasons.jsonl``.

    What a resume found broken is kept for a person to look at, never read again, and said why."""
    import shutil
    import time

    aside.mkdir(parents=True, exist_ok=True)
    dest = aside / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{name}"
    if copy:
        shutil.copyfile(src, dest)
    else:
        os.replace(src, dest)
    note_aside(aside, {**reason, ("copied_to" if copy else "moved_to"): dest.name})
    return dest


def note_aside(aside: Path, entry: dict[str, Any]) -> None:
    """One line of ``aside/reasons.jsonl``."""
    aside.mkdir(parents=True, exist_ok=True)
    with open(aside / "reasons.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")
