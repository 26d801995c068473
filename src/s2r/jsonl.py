"""JSON Lines I/O: strict reading (errors name file and line), atomic writes, resumable outputs.

Every stage writes its output through `ResumableJsonl`: records are appended to `PATH.partial` and
flushed one by one, and `finish()` renames the file to `PATH` in one atomic step. A killed run leaves
`PATH.partial` behind; opening it again loads what is there (a torn last line is dropped) so the
stage skips the work already done.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """Bad input data; the message names the file and line."""


def iter_jsonl(path: str | os.PathLike, *, allow_torn_tail: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) per non-blank line. A malformed line raises DataError naming
    `path:line`.

    allow_torn_tail: tolerate a malformed *last* line without a trailing newline (what a killed
    writer leaves behind); it is skipped.
    """
    path = Path(path)
    lines = path.read_bytes().split(b"\n")
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if allow_torn_tail and lineno == len(lines):  # no newline after it
                return
            raise DataError(f"{path}:{lineno}: malformed JSON: {e}") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        yield lineno, record


def read_jsonl(path: str | os.PathLike, *, allow_torn_tail: bool = False) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSONL file (see iter_jsonl)."""
    for _, record in iter_jsonl(path, allow_torn_tail=allow_torn_tail):
        yield record


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False)


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # the permissions a plain open() would give, not mkstemp's 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    write_atomic(path, "".join(dumps(r) + "\n" for r in records))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


class ResumableJsonl:
    """An output file that survives being killed.

    >>> out = ResumableJsonl("out.jsonl")      # loads out.jsonl.partial, else out.jsonl, if present
    >>> out.records                            # what an earlier run already wrote, in order
    >>> out.append({"id": 1}); out.finish()    # append + flush each; finish() renames atomically
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        source = self.partial if self.partial.exists() else self.path if self.path.exists() else None
        self.records: list[dict[str, Any]] = (
            list(read_jsonl(source, allow_torn_tail=True)) if source else []
        )
        self.resumed_from = source
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Rewrite the partial file from the clean records (drops a torn tail), then append to it.
        write_jsonl_atomic(self.partial, self.records)
        self._f = self.partial.open("a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self._f.write(dumps(record) + "\n")
        self._f.flush()

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            self.append(r)

    def finish(self) -> None:
        """Land the output: PATH.partial → PATH in one atomic rename."""
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self.partial, self.path)

    def close(self) -> None:
        """Stop without landing (the partial file stays for a later resume)."""
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> ResumableJsonl:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
