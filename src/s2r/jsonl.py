"""JSON Lines I/O: strict reading (errors name file and line), atomic writes, resumable outputs.

Every stage writes its output through `ResumableJsonl`: records are appended to `PATH.partial` and
flushed one by one, and `finish()` renames the file to `PATH` in one atomic step. A killed run leaves
`PATH.partial` behind; opening it again loads what is there (a torn last line is dropped) so the
stage skips the work already done.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """Bad input data; the message names the file and line."""


def readable_file(path: str | os.PathLike) -> Path:
    """`path` as a Path when it is a file this process can read; else DataError naming it."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file (a {'folder' if path.is_dir() else 'special file'})")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: not readable (permission denied)")
    return path


def iter_jsonl(path: str | os.PathLike, *, allow_torn_tail: bool = False,
               allow_empty: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) per non-blank line. A path that is no readable file, a malformed
    line, a line that is not a JSON object, or (unless allow_empty) a file with no record raises
    DataError naming `path` (and `:line`).

    allow_torn_tail: tolerate a malformed *last* line without a trailing newline (what a killed
    writer leaves behind); it is skipped.
    """
    path = readable_file(path)
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    found = False
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, too deep, too many digits
            if allow_torn_tail and lineno == len(lines):  # no newline after it
                break
            raise DataError(f"{path}:{lineno}: malformed JSON: {e}") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        found = True
        yield lineno, record
    if not found and not allow_empty:
        raise DataError(f"{path}: no records (the file is empty)")


Types = type | tuple[type, ...]


def wrong_field(record: dict[str, Any], fields: dict[str, Types]) -> str | None:
    """What is wrong with `record` against {field: type(s)}, or None. `int` does not accept a bool.

    >>> wrong_field({"id": 1}, {"id": str, "grade": str})
    "field 'id' must be str, not int"
    """
    for name, types in fields.items():
        if name not in record:
            return f"missing field {name!r}"
        allowed = types if isinstance(types, tuple) else (types,)
        value = record[name]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            return f"field {name!r} must be {names}, not {type(value).__name__}"
    return None


def read_jsonl(path: str | os.PathLike, *, allow_torn_tail: bool = False,
               allow_empty: bool = False) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSONL file (see iter_jsonl)."""
    for _, record in iter_jsonl(path, allow_torn_tail=allow_torn_tail, allow_empty=allow_empty):
        yield record


_SURROGATE = re.compile("[\ud800-\udfff]")


def escape_surrogates(text: str) -> str:
    """Lone surrogates ("\\ud800" in JSON) as their \\uXXXX escape: UTF-8 cannot encode them raw, and
    inside a JSON string the escape reads back to the same character."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def has_surrogate(text: str) -> bool:
    """True when `text` holds a lone surrogate (no tokenizer can encode one)."""
    return _SURROGATE.search(text) is not None


def dumps(record: dict[str, Any]) -> str:
    """One JSONL line, UTF-8 safe (see escape_surrogates)."""
    return escape_surrogates(json.dumps(record, ensure_ascii=False))


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder and an atomic rename. A lone
    surrogate (which UTF-8 cannot encode) is written as its escape, \\udXXX."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # the permissions a plain open() would give, not mkstemp's 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
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
    write_atomic(path, escape_surrogates(json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False)) + "\n")


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
            list(read_jsonl(source, allow_torn_tail=True, allow_empty=True)) if source else []
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
