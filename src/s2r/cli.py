"""The `s2r` command: one subcommand per stage, each with one typed config (see config.py)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from s2r import __version__
from s2r.check import CheckConfig, run_check
from s2r.config import ConfigError, add_arguments, arg, from_args
from s2r.bi.build import BuildConfig
from s2r.hard import HardConfig
from s2r.bi.sample import SampleConfig
from s2r.bi.verify import VerifyConfig
from s2r.demo import DemoConfig
from s2r.compare import CompareConfig
from s2r.solve import EndpointErrors, EvalConfig, SolveConfig
from s2r.jsonl import DataError, write_json_atomic, write_jsonl_atomic
from s2r.models.tiny import TinyModelConfig
from s2r.progress import every_from_env
from s2r.serve import ServeConfig
from s2r.tasks import DataFields
from s2r.tasks.arith.base import BaseConfig
from s2r.train.dpo import DPOConfig
from s2r.train.offline import OfflineConfig
from s2r.train.rl import RLConfig
from s2r.train.score import ScoreConfig
from s2r.train.sft import SFTConfig


@dataclass
class MetricsConfig:
    trajectories: str = arg(help="trajectories JSONL (docs/formats.md)", positional=True)
    out: str | None = arg(None, help="write the metrics as JSON here")


def run_metrics(cfg: MetricsConfig) -> dict:
    from s2r.metrics import compute_metrics, load_trajectories, metrics_table

    result = compute_metrics(load_trajectories(cfg.trajectories))
    print(metrics_table(result))
    if cfg.out:
        write_json_atomic(cfg.out, result)
        print(f"wrote {cfg.out}", file=sys.stderr)
    return result


@dataclass
class DataConfig(DataFields):
    name: str | None = arg(None, help="benchmark folder name (math500, gsm8k:train, arith:train, ...) or a JSONL file; "
                                      "with --task, its split", positional=True)
    out: str | None = arg(None, help="write the problems as JSONL here (default: print them)")


def run_data(cfg: DataConfig) -> list:
    from s2r.jsonl import dumps

    problems = cfg.datasets([cfg.name] if cfg.name else None, "math500")[0].problems
    if cfg.out:
        write_jsonl_atomic(cfg.out, (p.as_dict() for p in problems))
        print(f"wrote {len(problems)} problems to {cfg.out}", file=sys.stderr)
    else:
        for p in problems:
            print(dumps(p.as_dict()))
    return problems


def _lazy(module: str, func: str) -> Callable:
    """Import heavy modules (torch, transformers) only for the command that needs them."""
    def run(cfg):
        import importlib

        return getattr(importlib.import_module(module), func)(cfg)
    return run


COMMANDS: dict[str, tuple[type, Callable, str]] = {
    "check": (CheckConfig, run_check, "grade a JSONL file of responses against gold answers"),
    "metrics": (MetricsConfig, run_metrics, "self-verification / self-correction metrics of a trajectories file"),
    "data": (DataConfig, run_data, "list or export the problems of a benchmark as JSONL"),
    "tiny-model": (TinyModelConfig, _lazy("s2r.models.tiny", "run_tiny_model"),
                   "write a small random Llama model + character tokenizer (smoke tests)"),
    "serve": (ServeConfig, _lazy("s2r.serve", "run_serve"), "OpenAI-compatible server over a local model"),
    "solve": (SolveConfig, _lazy("s2r.solve", "run_solve"), "write trajectories: a model solves (and checks) problems"),
    "eval": (EvalConfig, _lazy("s2r.solve", "run_eval"), "solve + metrics.json + report.html"),
    "sample": (SampleConfig, _lazy("s2r.bi.sample", "run_sample"), "BI data 1/3: K sampled first attempts per problem, graded"),
    "verify": (VerifyConfig, _lazy("s2r.bi.verify", "run_verify"), "BI data 2/3: a teacher verification per distinct (problem, answer)"),
    "build": (BuildConfig, _lazy("s2r.bi.build", "run_build"), "BI data 3/3: assemble self-verify / self-correct SFT records"),
    "hard": (HardConfig, _lazy("s2r.hard", "run_hard"), "the problems a model gets wrong or needs many attempts for, from its trajectories (RL data)"),
    "sft": (SFTConfig, _lazy("s2r.train.sft", "run_sft"), "fine-tune on SFT records (masked NLL + KL to the start model)"),
    "rl": (RLConfig, _lazy("s2r.train.rl", "run_rl"), "online RL: outcome-level (ORL) or process-level (PRL) rewards"),
    "dpo": (DPOConfig, _lazy("s2r.train.dpo", "run_dpo"), "preference optimisation (DPO) on pairs of the model's own right and wrong samples"),
    "score": (ScoreConfig, _lazy("s2r.train.score", "run_score"),
              "SCoRe: two-turn self-correction by online RL, stage 1 or 2 (docs/score.md)"),
    "offline": (OfflineConfig, _lazy("s2r.train.offline", "run_offline"), "offline RL on a fixed model's filtered rollouts"),
    "base": (BaseConfig, _lazy("s2r.tasks.arith.base", "run_base"), "train the embedded task's tiny base model from scratch"),
    "demo": (DemoConfig, _lazy("s2r.demo", "run_demo"), "the whole method on the embedded task, on a CPU"),
    "compare": (CompareConfig, _lazy("s2r.compare", "run_compare"),
                "S²R and its relatives (SCoRe, CCT, mistake tuning, DPO, R-Tuning, ...) side by side on the embedded task"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2r", description=__doc__)
    parser.add_argument("--version", action="version", version=f"s2r {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (cls, _, help_text) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text), cls)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ns = build_parser().parse_args(argv)
    cls, run, _ = COMMANDS[ns.command]
    try:
        every_from_env()  # a bad S2R_PROGRESS_SECONDS stops the command now, not after minutes of work
        run(from_args(cls, ns))
    except (ConfigError, DataError, OSError, ValueError, EndpointErrors) as e:
        if os.environ.get("S2R_DEBUG"):
            raise
        message = " ".join(str(e).split("\n"))  # one line, whatever the message
        print(f"s2r {ns.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"s2r {ns.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
