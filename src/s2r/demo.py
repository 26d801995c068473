"""`s2r demo`: the whole method on the embedded task, on a laptop CPU, with the numbers that move.

Takes the shipped seed-0 base model (another seed's is built, or reused from the cache), evaluates
it on the test split with each strategy, and writes `DIR/results.json`, `DIR/report.html` and one
trajectories file per row in `DIR/rows/`. A killed demo resumes: finished rows and trajectories are
reused.

Rows:
- `base`: one greedy attempt; `base-majority4`: majority of 4 samples at T=0.7; `base-intrinsic`: a
  prompted review turn.
- `bi`: behaviour initialisation (docs/method.md §2): the base model samples 5 attempts per training
  problem, the task's confirmative verifier checks each distinct answer, `build` assembles
  self-verify / self-correct trajectories and `sft` fine-tunes the base model on them; evaluated with
  the `s2r` strategy. `plain-sft`: the same problems' correct attempts only, same steps (the paper's
  control). Their data and models are in `DIR/bi/`.
- `orl`, `prl`: online RL from the bi model (`s2r rl`) on the training problems (with --rl-hard, ORL
  on those the bi model finds hard: `s2r hard` on its greedy trajectories of problems BI did not
  use); `offline`: offline RL on the bi model's filtered rollouts (`s2r offline`); in `DIR/rl/`.
  Their settings are the recipes in s2r/recipes/arith/ (sft, orl, prl, offline); the demo sets the
  model, output folder, seed and (under --quick) the sizes.
  `prl-majorityK`: the prl model votes over K sampled answers, K chosen so that its tokens per
  problem match prl's: prl's tokens per problem over the mean tokens of a sampled single answer,
  measured on 4 answers to each of the first 200 test problems (`rows/prl-single-sampled.jsonl`,
  not a row of the table).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from s2r import recipes
from s2r.config import arg, cache_root
from s2r.solve import solve_resumable
from s2r.jsonl import write_atomic, write_json_atomic, write_jsonl_atomic
from s2r.metrics import compute_metrics
from s2r.models.backend import SamplingParams
from s2r.progress import announce
from s2r.report import render_report
from s2r.settings_guard import file_digest, model_digest
from s2r.loop import Settings
from s2r.tasks import arith
from s2r.tasks.arith.base import PLAIN, BaseConfig, is_trained, train_base

# Seed 0's base model as `s2r base` trained it (2,400 steps, 51.0% greedy validation accuracy; its
# base.json has the key of the settings and recipe it was trained with). The demo starts from it, as a
# user starts from a downloaded checkpoint; other seeds, or --train-base, train one from scratch.
SHIPPED_BASE = Path(__file__).parent / "assets" / "base-seed0"

TABLE = [("eval/acc_first", "acc first"), ("eval/acc_final", "acc final"), ("eval/i2c", "i2c"), ("eval/c2i", "c2i"),
         ("verify/tpr", "tpr"), ("verify/tnr", "tnr"), ("eval/cl", "cl"), ("eval/cs", "cs"), ("eval/rss", "rss"),
         ("eval/attempts_mean", "attempts"), ("eval/tokens_mean", "tokens")]

# --quick caps these settings at these values
QUICK = {"test_problems": 150, "bi_problems": 200, "screen_problems": 150, "rl_iterations": 2, "rl_prompts": 16,
         "offline_problems": 16}


@dataclass(kw_only=True)
class StageFields:
    """The settings of the demo's stages, shared with `s2r compare`."""

    quick: bool = arg(False, help="a smaller run: 150 test problems, 2 RL iterations × 16 prompts (and the sizes below "
                                  "that say so)")
    test_problems: int = arg(1000, help="test problems (--quick 150)")
    cache: str | None = arg(None, help="where trained models are kept and reused (default $S2R_CACHE or ~/.cache/s2r)")
    train_base: bool = arg(False, help="train the base model from scratch even where s2r ships it (seed 0)")
    target_acc: float = arg(0.5, help="base model: stop training at this greedy validation accuracy")
    base_max_steps: int | None = arg(None, help="base model: training steps at most (default 3000, --quick 200)")
    bi_problems: int = arg(200, help="BI: training problems to sample from")
    bi_samples: int = arg(5, help="BI: attempts per training problem (K)")
    rl_iterations: int = arg(12, help="ORL and PRL: iterations (--quick 2)")
    rl_prompts: int = arg(32, help="ORL and PRL: prompts per iteration, × 4 samples (--quick 16)")
    max_tokens: int = arg(800, help="evaluation: token budget of an s2r trajectory (RL's is in its recipe)")
    batch_size: int = arg(128, help="prompts per generate() call of sampled rows and stages (offline RL samples with "
                                    "its recipe's)")
    greedy_batch_size: int = arg(512, help="prompts per generate() call of the greedy evaluation rows")

    def width(self, settings: Settings) -> int:
        """generate() width of a row: a sampled row's draw depends on its calls' width (the random stream
        runs over a call), a greedy row's does not (the same trajectories at 128 and 512, faster)."""
        return self.greedy_batch_size if settings.params.temperature == 0 else self.batch_size

    def sized(self, name: str) -> int:
        """A setting of QUICK, capped there under --quick."""
        return min(getattr(self, name), QUICK[name]) if self.quick else getattr(self, name)


@dataclass
class DemoConfig(StageFields):
    out: str = arg("runs/demo", help="output folder: results.json, report.html, rows/")
    seed: int = arg(0, help="seed of the task splits, the base model and sampling")
    votes: int = arg(4, help="base-majority: samples per vote")
    rl_hard: bool = arg(False, help="ORL trains on the bi model's hard training problems (`s2r hard`: those its greedy s2r "
                                    "trajectory ends wrong or needs ≥ 3 attempts for); PRL trains on all of them")
    screen_problems: int = arg(1000, help="--rl-hard: training problems (after BI's) the bi model solves to find its "
                                          "hard ones (--quick 150)")
    offline_problems: int | None = arg(None, help="offline: training problems (× 8 samples; default: the offline recipe's "
                                                  "limit; --quick at most 16)")


def base_config(cfg: DemoConfig) -> BaseConfig:
    """The shipped base model where it has these settings (seed 0), else the full one from the cache
    or trained into it; --quick trains a short one unless the full one is already cached."""

    def placed(base: BaseConfig) -> BaseConfig:
        return replace(base, out=str(cache_root(cfg.cache) / f"base-{base.key()}"))

    full = placed(BaseConfig(seed=cfg.seed, target_acc=cfg.target_acc))
    if cfg.base_max_steps:
        return placed(replace(full, max_steps=cfg.base_max_steps))
    shipped = replace(full, out=str(SHIPPED_BASE))
    if not cfg.train_base and is_trained(shipped):
        return shipped
    if cfg.quick and not is_trained(full):
        return placed(replace(full, max_steps=200))
    return full


def bi_stage(cfg: DemoConfig, base_dir: Path, out: Path, batch_size: int) -> dict[str, Path]:
    """sample → verify → build → sft, for the `bi` and `plain-sft` models (each step reuses its output)."""
    from s2r.bi.build import BuildConfig, NoRecords, run_build
    from s2r.bi.verify import VerifyConfig, run_verify
    from s2r.train.sft import SFTConfig, run_sft

    stage = out / "bi"
    n = cfg.sized("bi_problems")
    train = list(arith.generate("train", n, cfg.seed))
    sampled = Settings(max_tokens=200, params=SamplingParams(max_tokens=200, temperature=0.7, seed=cfg.seed), prompt=PLAIN)
    jobs = [("arith", p, k) for p in train for k in range(cfg.bi_samples)]
    run_row("bi-attempts", "single", base_dir, jobs, sampled, stage, batch_size, path=stage / "attempts.jsonl")
    run_verify(VerifyConfig(str(stage / "attempts.jsonl"), out=str(stage / "verified.jsonl"),
                            cache=str(stage / "verifications.jsonl")))
    models = {}
    for name, kind in (("bi", "s2r"), ("plain-sft", "plain")):
        data = stage / f"{kind}.jsonl"
        try:
            run_build(BuildConfig(str(stage / "verified.jsonl"), out=str(data), kind=kind, seed=cfg.seed))
        except NoRecords:
            print(f"warning: the base model solved none of the {n} training problems in {cfg.bi_samples} samples: "
                  "no BI data, so the bi and plain-sft rows are left out (train the base model longer)", file=sys.stderr)
            return {}
        models[name] = run_sft(recipes.load(SFTConfig, "arith/sft", data=str(data), model=str(base_dir),
                                            out=str(stage / name), seed=cfg.seed))
    return models


def hard_stage(cfg: DemoConfig, bi_model: Path, s2r: Settings, out: Path) -> Path | None:
    """The bi model solves (greedy, s2r) training problems BI did not use; those it ends wrong or right
    only after ≥ 3 attempts are written to DIR/rl/hard.jsonl (`s2r hard`). None when there are none."""
    from s2r.hard import hard_problems

    stage = out / "rl"
    n_bi, n = cfg.sized("bi_problems"), cfg.sized("screen_problems")
    jobs = [("arith", p, 0) for p in list(arith.generate("train", n_bi + n, cfg.seed))[n_bi:]]
    records = run_row("screen", "s2r", bi_model, jobs, s2r, out, cfg.batch_size, path=stage / "screen.jsonl")
    hard, counts = hard_problems(records, min_attempts=3)
    print(f"rl problems: {counts['hard']} of {len(jobs)} training problems BI did not use are hard for the bi model "
          f"({counts['easy']} easy, {counts['ungraded']} ungraded)", file=sys.stderr)
    if not hard:
        print("no hard problems: ORL trains on all training problems", file=sys.stderr)
        return None
    write_jsonl_atomic(stage / "hard.jsonl", hard)
    return stage / "hard.jsonl"


def rl_stage(cfg: DemoConfig, bi_model: Path, hard: Path | None, out: Path, offline: bool = True) -> dict[str, Path]:
    """ORL (online, from the bi model; on its hard problems when given), PRL (online, on all training
    problems) and, with `offline`, offline RL (on the bi model's filtered rollouts)."""
    from s2r.train.offline import NoOfflineData, OfflineConfig, run_offline
    from s2r.train.rl import RLConfig, run_rl

    stage = out / "rl"
    # offline RL samples with its recipe's generate() batch (its rollouts are sampled at once, not per iteration)
    mine = dict(model=str(bi_model), data=[f"arith:train:{cfg.seed}"], seed=cfg.seed)
    online = dict(mine, generation_batch_size=cfg.batch_size, iterations=cfg.sized("rl_iterations"),
                  prompts=cfg.sized("rl_prompts"))
    models = {
        "orl": run_rl(recipes.load(RLConfig, "arith/orl", **dict(online, data=[str(hard)] if hard else mine["data"]),
                                   out=str(stage / "orl"))),
        "prl": run_rl(recipes.load(RLConfig, "arith/prl", **online, out=str(stage / "prl"))),
    }
    if not offline:
        return models
    try:
        offline = recipes.load(OfflineConfig, "arith/offline", **mine, out=str(stage / "offline"))
        limit = cfg.offline_problems or offline.limit
        models["offline"] = run_offline(replace(offline, limit=min(limit, QUICK["offline_problems"]) if cfg.quick else limit))
    except NoOfflineData as e:
        print(f"warning: the offline row is left out: {e}", file=sys.stderr)
    return models


# The code a row's trajectories and grades come from: the loop, its parser, records and prompts, the
# backends, the task, the grader and the certainty statement (methods/rtuning.py). A change to any of
# them runs the rows again rather than mixing old and new.
ROW_CODE = ("loop.py", "format.py", "records.py", "prompts.py", "grader.py", "methods/rtuning.py", "models", "tasks")


# test problems × sampled single answers whose mean length sets the k of prl-majorityK (a few answers run
# on for up to 200 tokens: one per problem left the vote's tokens 11% off prl's, four left them within 5%)
CALIBRATION = (200, 4)


def tokens_per_problem(records: list[dict]) -> float:
    return compute_metrics(records)["overall"]["eval/tokens_mean"]


def matched_majority(row, model: Path, matched: list[dict], jobs, sampled: Settings,
                     name: str | None = None) -> tuple[int, list[dict]]:
    """(k, trajectories) of `model` voting over k sampled single answers, k = the tokens per problem of
    `matched` over those of one sampled single answer (measured as CALIBRATION says, in a row
    `prl-single-sampled` that is not a row of the table). row(name, strategy, model, jobs, settings)
    runs a row; the vote's row is `name` (default prl-majorityK)."""
    n, m = CALIBRATION
    calibration = [(b, p, i) for b, p, _ in jobs[:n] for i in range(m)]
    one = row("prl-single-sampled", "single", model, calibration, sampled)
    k = max(2, round(tokens_per_problem(matched) / tokens_per_problem(one)))
    return k, row(name or f"prl-majority{k}", "majority", model, jobs, replace(sampled, votes=k))


def code_digest() -> str:
    """s2r's code that writes and grades a row's trajectories (ROW_CODE)."""
    package = Path(__file__).parent
    return file_digest(sorted(f for name in ROW_CODE for f in ([package / name] if name.endswith(".py")
                                                               else (package / name).rglob("*.py"))))


def run_row(name: str, strategy: str, model_dir: Path, jobs, settings: Settings, out: Path, batch_size: int,
            path: Path | None = None) -> list[dict]:
    """Trajectories of one row, resumable: DIR/rows/NAME.jsonl (or `path`). Trajectories of another
    model, other settings or other s2r code (PATH.settings.json says whose they are) are discarded,
    not reused."""
    def backend():
        from s2r.models.hf import TransformersBackend

        return TransformersBackend.from_pretrained(str(model_dir), batch_size=batch_size)

    path = path or out / "rows" / f"{name}.jsonl"
    return solve_resumable(path, jobs, strategy, settings, backend, model=model_digest(model_dir), chunk=batch_size,
                           desc=name, guard={"code": code_digest()}, restart=True)


def format_table(rows: list[dict]) -> str:
    head = f"{'row':<18}" + "".join(f"{title:>11}" for _, title in TABLE)
    lines = [head, "-" * len(head)]
    for row in rows:
        m = row["metrics"]
        cells = []
        for key, _ in TABLE:
            v = m.get(key)
            cells.append(f"{'—':>11}" if v is None else f"{v:>11.1f}" if key.endswith("_mean") else f"{100 * v:>10.1f}%")
        lines.append(f"{row['name']:<18}" + "".join(cells))
    return "\n".join(lines)


def run_demo(cfg: DemoConfig) -> dict:
    out = Path(cfg.out)
    start = time.monotonic()
    n_test = cfg.sized("test_problems")
    print(f"s2r demo: seed {cfg.seed}, {n_test} test problems of the embedded arithmetic task", file=sys.stderr)
    seconds: dict[str, float] = {}  # wall clock of each stage -> results.json "seconds"

    def timed(name: str, fn, *args, label: str = ""):
        """fn(*args), its wall clock added to seconds[name], between `demo: LABEL: started` / `done` lines."""
        t = time.monotonic()
        with announce(f"demo: {label or name}"):
            result = fn(*args)
        seconds[name] = seconds.get(name, 0.0) + time.monotonic() - t
        return result

    def row(name: str, strategy: str, model: Path, row_jobs, settings: Settings) -> list[dict]:
        return timed("evaluation", run_row, name, strategy, model, row_jobs, settings, out, cfg.width(settings),
                     label=f"evaluation of {name}")

    base_dir = timed("base model", train_base, base_config(cfg))
    models = timed("bi data and sft", bi_stage, cfg, base_dir, out, cfg.batch_size)
    jobs = [("arith", p, 0) for p in arith.generate("test", n_test, cfg.seed)]
    greedy = Settings(max_tokens=200, params=SamplingParams(max_tokens=200, seed=cfg.seed), prompt=PLAIN)
    sampled = replace(greedy, votes=cfg.votes, params=replace(greedy.params, temperature=0.7))
    s2r = replace(greedy, max_tokens=cfg.max_tokens, params=replace(greedy.params, max_tokens=cfg.max_tokens))
    plan = [
        ("base", "single", base_dir, greedy),
        (f"base-majority{cfg.votes}", "majority", base_dir, sampled),
        ("base-intrinsic", "intrinsic", base_dir, greedy),
    ]
    if models:
        plan += [("plain-sft", "single", models["plain-sft"], greedy), ("bi", "s2r", models["bi"], s2r)]
    runs = {name: row(name, strategy, model, jobs, s) for name, strategy, model, s in plan}
    if models:
        hard = timed("rl problems", hard_stage, cfg, models["bi"], s2r, out) if cfg.rl_hard else None
        models.update(timed("rl", rl_stage, cfg, models["bi"], hard, out))
        for name in [n for n in ("orl", "prl", "offline") if n in models]:
            runs[name] = row(name, "s2r", models[name], jobs, s2r)
        k, voted = matched_majority(row, models["prl"], runs["prl"], jobs, sampled)
        runs[f"prl-majority{k}"] = voted
    rows = [{"name": name, "metrics": compute_metrics(records)["overall"]} for name, records in runs.items()]
    result = {"seed": cfg.seed, "test_problems": n_test, "base_model": str(base_dir), "rows": rows,
              "seconds": {stage: round(t, 1) for stage, t in seconds.items()}}
    write_json_atomic(out / "results.json", result)
    write_atomic(out / "report.html", render_report(f"s2r demo · embedded arithmetic · seed {cfg.seed}", runs,
                                                    meta={"seed": cfg.seed, "test_problems": n_test, "base_model": str(base_dir)}))
    print(format_table(rows))
    print("seconds: " + ", ".join(f"{stage} {t:.0f}" for stage, t in seconds.items()), file=sys.stderr)
    print(f"wrote {out / 'results.json'} and {out / 'report.html'} in {time.monotonic() - start:.0f}s", file=sys.stderr)
    return result
