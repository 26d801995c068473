"""`s2r offline`: offline RL from a fixed model's rollouts (docs/method.md §3, offline).

    1. sample N rollouts per prompt (default 8, temperature 0.8) with the `s2r` strategy from the
       fixed model: OUT/rollouts.jsonl, or a sample set several runs share (--rollouts; resumable, and
       refused if sampled with other settings);
    2. select (`select`, pure): keep prompts whose final-answer accuracy lies in the band (default
       [0.1, 0.7]); drop rollouts whose actions do not alternate solve / verify or exceed the action
       cap; cut positives (rollouts with a correct attempt) right after the first correct attempt that
       was verified correct; keep at most as many negatives (no correct attempt) as positives per
       prompt (seeded);
    3. advantages with baselines computed over the whole dataset, grouped by reward context
       (`--group-by context`) or by (accuracy bucket, action position) (`--group-by bucket`):
       OUT/dataset.jsonl shows every kept rollout with its rewards and advantages;
    4. one pass (or `epochs`) of the clipped per-part objective of `s2r rl`, with the fixed model as
       the behaviour policy (π_old) and as the KL reference (a k3 term, β = 0.15: k1 folded into the
       advantage would be 0, the behaviour and reference policies being the same model).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from s2r.config import arg, to_dict
from s2r.format import CORRECT, SOLVE, VERIFY, MarkerFields, TrajectoryFormat
from s2r.records import Trajectory, graded_steps
from s2r.models.vllm_backend import ENGINE_SETTINGS, VLLMFields
from s2r.tasks import DataFields
from s2r.train.advantages import (
    CONTEXTS,
    Step,
    bonus_weights,
    context_stats,
    outcome_reward,
    process_rewards,
    returns_to_go,
)
from s2r.train.common import TrainFields

GROUPINGS = ("context", "bucket")


class NoOfflineData(ValueError):
    """No rollout passed the selection."""


@dataclass
class OfflineConfig(TrainFields, MarkerFields, DataFields, VLLMFields):
    model: str = arg(help="the fixed model: it samples the rollouts, and is the behaviour policy and KL reference", positional=True)
    data: list[str] | None = arg(None, help="problem sets: benchmarks (name, name:split) or JSONL files; with --task, "
                                            "its splits (default: arith:train)")
    level: str = arg("process", help="outcome (one part per rollout) or process (one part per action)")
    out: str = arg("runs/offline", help="output folder: rollouts.jsonl, dataset.jsonl, model/, log.jsonl, offline.json")
    rollouts: str | None = arg(None, help="the sample set: a rollouts file several offline runs share (sampled into where "
                                          "rollouts are missing, refused if sampled with other settings; default "
                                          "OUT/rollouts.jsonl)")
    samples: int = arg(8, help="N, rollouts per prompt")
    temperature: float = arg(0.8, help="sampling temperature")
    max_tokens: int = arg(1024, help="token budget of a rollout")
    max_attempts: int = arg(4, help="attempts per rollout at most")
    band: list[float] = arg([0.1, 0.7], help="keep prompts whose final-answer accuracy lies in [low, high]")
    max_actions: int = arg(10, help="drop rollouts with more actions than this")
    balance: bool = arg(True, help="keep at most as many negatives (no correct attempt) as positives per prompt (seeded)")
    group_by: str = arg("context", help="baselines over the dataset: by reward context, or by (accuracy bucket, position)")
    context: str = arg("full", help=f"group_by context: {', '.join(CONTEXTS)}")
    buckets: int = arg(5, help="group_by bucket: accuracy buckets of equal width")
    verify_bonus: bool = arg(True, help="process: ×2 on the advantage of verifying a correct attempt")
    flip_bonus: bool = arg(True, help="process: ×2 on the advantage of a re-solve that flips correctness")
    gamma: float = arg(0.0, help="process: a part's reward plus γ × the rewards after it (0: its own reward)")
    epochs: int = arg(1, help="passes over the dataset")
    batch_size: int = arg(64, help="rollouts per optimiser step (all processes together)")
    lr: float = arg(1e-6, help="learning rate (AdamW, constant)")
    clip_eps: float = arg(0.2, help="ε of the clipped surrogate")
    kl_coef: float = arg(0.15, help="β of the k3 KL term to the fixed model")
    generation_batch_size: int = arg(64, help="prompts per generate() call")
    backend: str = arg("transformers", help="samples the rollouts: transformers or vllm")
    seed: int = arg(0, help="seed of sampling, negative balancing and the data order")
    grader_timeout: float = arg(2.0, help="seconds per grading comparison (past it the attempt is unverifiable: a "
                                          "grader failure, and its prompt is left out)")
    ckpt_every: int = arg(50, help="steps between checkpoints")

    def key(self, rollouts_digest: str) -> str:
        """What determines the trained weights: the settings and the rollouts."""
        skip = ("out", "rollouts", "device", "threads", "tensorboard", "ckpt_every", "generation_batch_size", "backend",
                *ENGINE_SETTINGS, *self.loading_options())  # the rollouts' digest covers them
        fields = {k: v for k, v in asdict(self).items() if k not in skip}
        return hashlib.sha256(json.dumps([fields, rollouts_digest], sort_keys=True).encode()).hexdigest()[:16]

    def policy_loss(self):
        """The loss of rl_accumulate: the KL is a k3 loss term here (see the module docstring)."""
        from s2r.train.ppo import PolicyLoss

        return PolicyLoss(self.clip_eps, self.kl_coef, "k3", self.temperature)

    def check(self) -> None:
        if self.level not in ("outcome", "process"):
            raise ValueError(f"level must be outcome or process, not {self.level!r}")
        if self.group_by not in GROUPINGS:
            raise ValueError(f"group_by must be one of {', '.join(GROUPINGS)}, not {self.group_by!r}")
        if self.context not in CONTEXTS:
            raise ValueError(f"context must be one of {', '.join(CONTEXTS)}, not {self.context!r}")
        if self.backend not in ("transformers", "vllm"):
            raise ValueError(f"backend must be transformers or vllm, not {self.backend!r}")
        if len(self.band) != 2 or not 0 <= self.band[0] <= self.band[1] <= 1:
            raise ValueError(f"band must be two accuracies low ≤ high in [0, 1], not {self.band}")


# ----------------------------------------------------------------------------------- selection


@dataclass
class Kept:
    """A selected rollout: its record, the text to train on, its actions and whether it was cut off."""

    record: dict
    text: str
    steps: list[Step]
    spans: list[tuple[int, int]]
    truncated: bool
    accuracy: float  # its prompt's final-answer accuracy
    eos: bool  # train a closing EOS: where the model stopped, or where a positive was cut


def cut_point(steps: list[Step]) -> int | None:
    """Index of the verification that first calls a correct attempt correct (cut after it), or None.

    [✗, "incorrect", ✓, "correct", ✓, "correct"] -> 3
    """
    for i in range(1, len(steps)):
        if steps[i].kind == VERIFY and steps[i].verdict == CORRECT and steps[i - 1].kind == SOLVE and steps[i - 1].correct:
            return i
    return None


def select(records: list[dict], band: tuple[float, float], max_actions: int, fmt: TrajectoryFormat,
           seed: int, balance: bool = True) -> tuple[list[Kept], dict[str, int]]:
    """The offline dataset (see the module docstring) and counts of what was left out and why."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["benchmark"], str(r["id"]))].append(r)
    kept: list[Kept] = []
    counts = {"prompts": len(groups), "prompts_with_grader_failures": 0, "prompts_outside_band": 0, "not_alternating": 0,
              "too_many_actions": 0, "positives": 0, "negatives": 0, "negatives_dropped": 0}
    for key, group in groups.items():
        graded = {r["sample"]: graded_steps(Trajectory.load(r, fmt)) for r in group}
        if any(g is None for g in graded.values()):  # never scored: left out, counted
            counts["prompts_with_grader_failures"] += 1
            continue
        acc = sum(r["attempts"][-1]["grade"] == "correct" for r in group) / len(group)
        if not band[0] <= acc <= band[1]:
            counts["prompts_outside_band"] += 1
            continue
        positives, negatives = [], []
        for r in sorted(group, key=lambda r: r["sample"]):
            actions, steps = graded[r["sample"]]
            if not actions or not all(a.kind == (SOLVE if i % 2 == 0 else VERIFY) for i, a in enumerate(actions)):
                counts["not_alternating"] += 1
                continue
            text, truncated = r["text"], bool(r["truncated"])
            eos = r.get("stopped", not truncated)
            positive = any(s.kind == SOLVE and s.correct for s in steps)
            cut = cut_point(steps) if positive else None
            if cut is not None and cut < len(steps) - 1:  # later actions are dropped: it ends verified
                text, truncated, eos = text[: actions[cut].end], False, True
                actions, steps = actions[: cut + 1], steps[: cut + 1]
            if len(actions) > max_actions:  # counted after the cut: a long positive cut short stays
                counts["too_many_actions"] += 1
                continue
            kept_one = Kept(r, text, steps, [(a.start, a.end) for a in actions], truncated, acc, eos)
            (positives if positive else negatives).append(kept_one)
        rng = random.Random(f"{seed}|{key[0]}|{key[1]}")
        if balance and len(negatives) > len(positives):
            counts["negatives_dropped"] += len(negatives) - len(positives)
            negatives = sorted(rng.sample(negatives, len(positives)), key=lambda k: k.record["sample"])
        counts["positives"] += len(positives)
        counts["negatives"] += len(negatives)
        kept += positives + negatives
    return kept, counts


# ----------------------------------------------------------------------------------- dataset baselines


def group_keys(k: Kept, rewards: list[float], level: str, group_by: str, context: str, buckets: int) -> list[str]:
    """The baseline group of each part: its reward context, or "b{bucket}@{position}"."""
    if group_by == "bucket":
        bucket = min(buckets - 1, int(k.accuracy * buckets))
        return [f"b{bucket}@{i}" for i in range(len(rewards))]
    if level == "outcome":
        return [""]
    return CONTEXTS[context](k.steps, rewards)


def dataset_advantages(kept: list[Kept], level: str, group_by: str, context: str, buckets: int,
                       verify_bonus: bool, flip_bonus: bool,
                       gamma: float = 0.0) -> tuple[list[list[float]], list[list[float]], dict]:
    """(rewards per part, advantages per part, baselines) of every kept rollout, the baselines
    being the mean return of all the dataset's parts in the same group:
        A(p) = w(p) · (G(p) − b(group(p)))     (w: the ×2 bonuses, process level only;
                                                G: `returns_to_go` with γ, G = r at γ = 0)."""
    rewards = [[outcome_reward(k.steps, k.truncated)] if level == "outcome" else process_rewards(k.steps, k.truncated)
               for k in kept]
    keys = [group_keys(k, r, level, group_by, context, buckets) for k, r in zip(kept, rewards)]
    returns = [returns_to_go(r, gamma) for r in rewards]
    stats = context_stats([x for ks in keys for x in ks], [x for g in returns for x in g])
    baselines = {key: s / n for key, (s, n) in stats.items()}
    advantages = []
    for k, g, ks in zip(kept, returns, keys):
        w = bonus_weights(k.steps, verify_bonus, flip_bonus) if level == "process" else [1.0]
        advantages.append([wi * (gi - baselines[key]) for wi, gi, key in zip(w, g, ks)])
    return rewards, advantages, baselines


# ----------------------------------------------------------------------------------- the command


def rollout_settings(cfg: OfflineConfig, task):
    """The settings the fixed model samples its rollouts with (cfg's prompt already resolved)."""
    from s2r.models.backend import SamplingParams
    from s2r.loop import Settings

    return Settings(max_tokens=cfg.max_tokens, max_attempts=cfg.max_attempts, fmt=cfg.fmt, task=task,
                    prompt=cfg.prompt_config(),
                    params=SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, seed=cfg.seed))


def run_offline(cfg: OfflineConfig) -> Path:
    from s2r.solve import solve_resumable
    from s2r.jsonl import read_jsonl, write_json_atomic, write_jsonl_atomic
    from s2r.models.hf import TransformersBackend
    from s2r.prompts import problem_prompt
    from s2r.settings_guard import model_digest
    from s2r.loop import loop_written
    from s2r.tasks import grading_task
    from s2r.train.batching import encode_parts
    from s2r.train.common import checkpoint, finished, launched, load_models, save_model, start_run
    from s2r.train.ppo import Rollout, rl_accumulate, score_tokens
    from s2r.train.sharding import lockstep, optimiser_step

    cfg.check()
    cfg = cfg.from_model(cfg.model)
    out = Path(cfg.out)
    datasets = cfg.datasets(cfg.data, "arith:train")
    problems = [(d.name, p) for d in datasets for p in d.problems]
    if not problems:
        raise ValueError(f"no problems in {', '.join(d.name for d in datasets)}")
    with launched(cfg) as dist_:
        prompt_cfg = cfg.prompt_config()
        # 1. rollouts (process 0 samples; the others wait); a shared sample set may hold more than this run's
        rollouts_path = Path(cfg.rollouts) if cfg.rollouts else out / "rollouts.jsonl"
        jobs = [(b, p, k) for b, p in problems for k in range(cfg.samples)]
        if dist_.main:
            settings = rollout_settings(cfg, grading_task(datasets))
            def sampler():
                if cfg.backend == "vllm":
                    from s2r.models.vllm_backend import VLLMBackend

                    return VLLMBackend.from_pretrained(cfg.model, cfg, seed=cfg.seed)
                return TransformersBackend.from_pretrained(cfg.model, batch_size=cfg.generation_batch_size, device=str(dist_.device))

            solve_resumable(rollouts_path, jobs, "s2r", settings, desc="offline rollouts", chunk=cfg.generation_batch_size,
                            model=model_digest(cfg.model), backend_factory=sampler, grader_timeout=cfg.grader_timeout)
        dist_.barrier()
        mine = {(b, str(p.id), k) for b, p, k in jobs}
        records = [r for r in read_jsonl(rollouts_path) if (r["benchmark"], str(r["id"]), r["sample"]) in mine]
        # 2-3. selection and advantages
        kept, counts = select(records, (cfg.band[0], cfg.band[1]), cfg.max_actions, cfg.fmt, cfg.seed, cfg.balance)
        rewards, advantages, baselines = dataset_advantages(kept, cfg.level, cfg.group_by, cfg.context, cfg.buckets,
                                                            cfg.verify_bonus, cfg.flip_bonus, cfg.gamma)
        if dist_.main:
            print("offline data: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()), file=sys.stderr)
            write_jsonl_atomic(out / "dataset.jsonl", [
                {"benchmark": k.record["benchmark"], "id": k.record["id"], "sample": k.record["sample"], "text": k.text,
                 "truncated": k.truncated, "eos": k.eos, "accuracy": k.accuracy, "rewards": r, "advantages": a}
                for k, r, a in zip(kept, rewards, advantages)])
        if not kept:
            raise NoOfflineData(f"no rollout passed the selection ({counts}); widen --band or sample more")
        key = cfg.key(hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest())
        info_path = out / "offline.json"
        if finished(info_path, key, lambda info: info.get("finished"), dist_.main, "offline-RL model"):
            return out / "model"
        # 4. training
        model, _, tokenizer = load_models(cfg, dist_, reference=False)  # the fixed model is π_old and π_ref: scored once
        by_id = {(b, str(p.id)): p for b, p in problems}
        data = []
        for k, adv in zip(kept, advantages):
            p = by_id[(k.record["benchmark"], str(k.record["id"]))]
            prompt = problem_prompt(p.problem, prompt_cfg, tokenizer)
            spans = [(0, len(k.text))] if cfg.level == "outcome" else k.spans
            ids, parts = encode_parts(tokenizer, prompt, k.text, spans, add_eos=k.eos,
                                      skip=loop_written(k.record))
            data.append(Rollout(ids, parts, adv))
        score_tokens(model, None, data, cfg.micro_batch_size, tokenizer.pad_token_id, dist_.device, cfg.autocast(dist_.device),
                     cfg.temperature, ref_is_old=cfg.kl_coef > 0)
        steps = []
        for epoch in range(cfg.epochs):
            order = list(range(len(data)))
            random.Random(f"{cfg.seed}|{epoch}").shuffle(order)
            steps += [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        run = start_run(cfg, out, key, model, dist_, "step", len(steps), f"offline ({cfg.level})")
        step, log, params, opt, ddp, run_log = run.done, run.log, run.params, run.opt, run.ddp, run.run_log
        start = time.monotonic()
        model.train()
        while step < len(steps):
            batch = [data[i] for i in steps[step]]
            n_parts = sum(len(r.adv) for r in batch)
            n_tokens = sum(sum(p >= 0 for p in r.parts[1:]) for r in batch)
            mine = batch[dist_.rank :: dist_.world]
            micros, weights = lockstep([mine[i : i + cfg.micro_batch_size] for i in range(0, len(mine), cfg.micro_batch_size)],
                                       batch[:1], dist_, cfg.strategy == "fsdp")
            stats = rl_accumulate(ddp, micros, n_parts, max(1, n_tokens), cfg.policy_loss(), dist_.world, weights,
                                  tokenizer.pad_token_id, dist_.device, cfg.autocast(dist_.device)).summed(dist_)
            grad_norm = optimiser_step(opt, params, cfg.grad_clip)
            step += 1
            record = {"step": step, "train/loss": stats.surrogate_sum / n_parts + cfg.kl_coef * stats.k3_sum / max(1, n_tokens),
                      "train/clip_frac": stats.clipped_parts / n_parts, "train/kl": stats.k3_sum / max(1, n_tokens),
                      "grad_norm": grad_norm,
                      "seconds": time.monotonic() - start}
            log.append(record)
            run_log.write(step, record, loss=f"{record['train/loss']:.3f}")
            if step % cfg.ckpt_every == 0 or step == len(steps):
                checkpoint(out, cfg, dist_, model, run.trainable_names, opt, key=key, step=step)
        run_log.close()
        save_model(model, tokenizer, cfg, out, dist_)
        if dist_.main:
            write_json_atomic(info_path, {"key": key, "finished": True, "steps": step, "selection": counts,
                                          "baselines": baselines, "config": to_dict(cfg)})
            print(f"wrote {out / 'model'} after {step} steps on {len(data)} rollouts", file=sys.stderr)
        dist_.barrier()
        return out / "model"
