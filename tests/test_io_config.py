"""JSONL I/O (strict reading, torn tails, resumable outputs) and the typed configs."""

import argparse
from dataclasses import dataclass

import pytest

from s2r.config import ConfigError, add_arguments, arg, from_args
from s2r.jsonl import DataError, ResumableJsonl, read_jsonl


def test_torn_tail_only_tolerated_when_asked(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": 2')
    assert list(read_jsonl(path, allow_torn_tail=True)) == [{"a": 1}]
    with pytest.raises(DataError, match=r"x.jsonl:2: malformed JSON"):
        list(read_jsonl(path))
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"x.jsonl:2: expected a JSON object"):
        list(read_jsonl(path))


def test_resumable_output(tmp_path):
    path = tmp_path / "out.jsonl"
    out = ResumableJsonl(path)
    out.append({"i": 0})
    out.append({"i": 1})
    out.close()  # killed before finish(): nothing landed
    assert not path.exists()
    with open(out.partial, "a") as f:
        f.write('{"i": 2, "tor')  # a write cut short
    again = ResumableJsonl(path)
    assert again.records == [{"i": 0}, {"i": 1}] and again.resumed_from == out.partial
    again.append({"i": 2})
    again.finish()
    assert list(read_jsonl(path)) == [{"i": 0}, {"i": 1}, {"i": 2}] and not out.partial.exists()


@dataclass
class Demo:
    src: str = arg(help="input", positional=True)
    steps: int = arg(10, help="steps")
    lr: float = arg(1e-3, help="learning rate")
    name: str | None = arg(None, help="name")
    tags: list[str] = arg(["a"], help="tags")
    fast: bool = arg(False, help="go fast")


def parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser, Demo)
    return from_args(Demo, parser.parse_args(argv))


def test_flags_yaml_and_defaults(tmp_path):
    assert parse(["in.jsonl"]) == Demo("in.jsonl")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("steps: 5\nlr: 1\ntags: [x, y]\nfast: true\n")
    assert parse(["in.jsonl", "--config", str(cfg), "--steps", "7"]) == Demo("in.jsonl", 7, 1, None, ["x", "y"], True)


def test_unknown_and_mistyped_settings_are_errors(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("stepz: 5\n")
    with pytest.raises(ConfigError, match="unknown setting.*stepz"):
        parse(["in.jsonl", "--config", str(cfg)])
    cfg.write_text("steps: five\n")
    with pytest.raises(ConfigError, match="steps must be"):
        parse(["in.jsonl", "--config", str(cfg)])


def test_secrets_are_recorded_as_set_never_as_their_value():
    from s2r.config import from_dict, to_dict
    from s2r.solve import EvalConfig

    assert to_dict(EvalConfig(out="o", api_key="sk-secret"))["api_key"] == "<set>"
    assert to_dict(EvalConfig(out="o"))["api_key"] is None
    with pytest.raises(ConfigError) as e:
        from_dict(EvalConfig, {"out": "o", "api_key": 123456789})
    assert "123456789" not in str(e.value) and "api_key" in str(e.value)
