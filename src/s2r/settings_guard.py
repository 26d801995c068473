"""What a resumable output was written with: `PATH.settings.json`, checked before PATH is resumed.

Every command that resumes an output file (solve, eval, sample, offline's rollouts, verify, the
demo's rows) calls `guard_output(PATH, settings)` first. Settings are a flat dict of readable values
(the model's digest, strategy, sampling, prompt, format, task, ...). When PATH (or PATH.partial)
exists and was written with other settings, a command stops with one line naming what differs and
how to start over; the demo (`restart=True`) discards the stale output and runs again. Old and new
output are never mixed.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from s2r.jsonl import write_json_atomic


class SettingsChanged(ValueError):
    """A rerun's settings differ from those its output was written with."""


def file_digest(files: Iterable[Path]) -> str:
    """sha256 (16 hex digits) of the files' bytes, in the order given."""
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()[:16]


def model_digest(model_dir: str | Path) -> str:
    """What a local model generates from: its config and weights (not where the folder is)."""
    folder = Path(model_dir)
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    return file_digest([folder / "config.json", *weights]) if (folder / "config.json").is_file() else str(model_dir)


def settings_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".settings.json")


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def differences(old: dict, new: dict) -> str:
    """"temperature 0.0 → 0.7, seed 0 → 1" for the settings that differ."""
    keys = [k for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]
    return ", ".join(f"{k} {_show(old.get(k))} → {_show(new.get(k))}" for k in keys)


def guard_output(path: str | Path, settings: dict[str, Any], *, restart: bool = False) -> None:
    """Record `settings` for the output `path`, after checking that what is already there (PATH,
    PATH.partial) was written with the same settings. Raises SettingsChanged when not (restart:
    removes the stale output instead, and says so)."""
    path = Path(path)
    record = settings_path(path)
    settings = json.loads(json.dumps(settings))  # as read back: tuples become lists
    outputs = [p for p in (path, path.with_name(path.name + ".partial")) if p.exists()]
    try:
        old = json.loads(record.read_text()) if record.exists() else None
    except ValueError:
        old = None  # a torn record (written atomically, so only by hand): treated as missing
    if outputs and old != settings:
        what = (f"was written with other settings ({differences(old, settings)})" if isinstance(old, dict)
                else f"has no record of the settings it was written with ({record.name})")
        if not restart:
            raise SettingsChanged(f"{path} {what}: remove {' and '.join(str(p) for p in outputs)} to start over, "
                                  "or choose another --out")
        print(f"{path} {what}: running it again", file=sys.stderr)
        for stale in outputs:
            stale.unlink()
    if old != settings:
        write_json_atomic(record, settings)
