"""Progress lines: periodic plain lines off a terminal (fake clock), a tqdm bar on one, the env var."""

import io

import pytest

from s2r.progress import ENV, Progress, announce, every_from_env, format_duration, progress_line


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_durations_and_lines_by_hand():
    assert [format_duration(s) for s in (0, 45, 284, 3600, 7380)] == ["0s", "45s", "4m44s", "1h00m", "2h03m"]
    # 120 of 1000 at 3.1/s: 880 / 3.1 = 283.9 s left -> 4m44s
    assert progress_line("sft", 120, 1000, "step", 3.1, {"loss": "0.412", "reward": 0.31}) == \
        "sft: 120/1000 steps (12%), 3.1 step/s, ETA 4m44s, loss 0.412, reward 0.31"
    # under one per second it reads as seconds per unit; an unknown total has no % and no ETA
    assert progress_line("solve", 3, None, "trajectory", 0.25, {}) == "solve: 3 trajectories, 4.0 s/trajectory"
    assert progress_line("rl", 0, 10, "iteration", None, {}) == "rl: 0/10 iterations (0%)"


def test_off_a_terminal_a_line_at_the_start_every_period_and_the_end():
    clock, log = FakeClock(), io.StringIO()
    with Progress("train", 10, unit="step", file=log, every=30, clock=clock) as p:
        for i in range(10):
            clock.now += 10  # 10 s a step: a line every third step
            p.update(loss=f"{1 / (i + 1):.3f}")
    lines = log.getvalue().splitlines()
    assert lines == [
        "train: 0/10 steps (0%)",
        "train: 3/10 steps (30%), 10.0 s/step, ETA 1m10s, loss 0.333",
        "train: 6/10 steps (60%), 10.0 s/step, ETA 40s, loss 0.167",
        "train: 9/10 steps (90%), 10.0 s/step, ETA 10s, loss 0.111",
        "train: 10/10 steps (100%), 10.0 s/step, loss 0.100",
    ]


def test_a_resumed_run_counts_its_own_rate_and_fields_persist():
    clock, log = FakeClock(), io.StringIO()
    p = Progress("rl (outcome)", 100, initial=40, unit="iteration", file=log, every=0, clock=clock)
    clock.now += 2
    p.update(4, reward=0.5)  # 4 in 2 s = 2/s (the 40 done before are not counted); 56 left -> 28 s
    clock.now += 2
    p.update(4, loss=0.25)
    p.write("step 48: val accuracy 0.5")
    p.close()
    p.close()  # a second close writes nothing
    assert log.getvalue().splitlines() == [
        "rl (outcome): 40/100 iterations (40%)",
        "rl (outcome): 44/100 iterations (44%), 2.0 iteration/s, ETA 28s, reward 0.5",
        "rl (outcome): 48/100 iterations (48%), 2.0 iteration/s, ETA 26s, reward 0.5, loss 0.25",
        "step 48: val accuracy 0.5",
    ]


def test_disabled_shows_nothing():
    log = io.StringIO()
    with Progress("sft", 5, file=log, enabled=False, every=0) as p:
        p.update(loss=1.0)
        p.write("hidden")
    assert log.getvalue() == ""


def test_on_a_terminal_a_tqdm_bar_with_the_fields():
    term = Terminal()
    with Progress("sft", 4, file=term, every=0) as p:
        for _ in range(4):
            p.update(loss="0.412")
    out = term.getvalue()
    assert "\r" in out and "4/4" in out and "loss=0.412" in out  # a redrawn bar, not lines
    assert "sft: 0/4 steps" not in out


def test_the_period_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert every_from_env() == 30
    monkeypatch.setenv(ENV, "2.5")
    assert every_from_env() == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(ENV, bad)
        with pytest.raises(ValueError, match=f"{ENV} must be a number of seconds"):
            every_from_env()


def test_announced_stage_lines():
    clock, log = FakeClock(), io.StringIO()
    with announce("demo: rl", file=log, clock=clock):
        clock.now += 75
    assert log.getvalue().splitlines() == ["demo: rl: started", "demo: rl: done in 1m15s"]


def test_sft_off_a_terminal_writes_step_and_loss_lines(tmp_path, monkeypatch, capsys):
    import json
    import re

    from s2r.jsonl import write_jsonl_atomic
    from s2r.models.tiny import TinyModelConfig, run_tiny_model
    from s2r.tasks import arith
    from s2r.train.sft import SFTConfig, run_sft

    model = run_tiny_model(TinyModelConfig(str(tmp_path / "model"), seed=0))
    records = []
    for p in arith.generate("train", 8, seed=0):
        completion = arith.solution(p.problem)
        records.append({"problem": p.problem, "completion": completion, "spans": [[0, len(completion)]]})
    write_jsonl_atomic(tmp_path / "sft.jsonl", records)
    monkeypatch.setenv(ENV, "0")  # a line after every step
    capsys.readouterr()
    run_sft(SFTConfig(str(tmp_path / "sft.jsonl"), model=str(model), out=str(tmp_path / "sft"), epochs=1, batch_size=4,
                      micro_batch_size=4, kl_coef=0.1, system="", template="plain", tensorboard=False, threads=1))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sft: ")]
    losses = [json.loads(line)["train/loss"] for line in (tmp_path / "sft" / "log.jsonl").read_text().splitlines()]
    assert lines[0] == "sft: 0/2 steps (0%)"
    rate = r"[\d.]+ (step/s|s/step)"
    assert re.fullmatch(rf"sft: 1/2 steps \(50%\), {rate}, ETA \w+, loss {losses[0]:.3f}, kl [\d.]+", lines[1]), lines[1]
    assert re.fullmatch(rf"sft: 2/2 steps \(100%\), {rate}, loss {losses[1]:.3f}, kl [\d.]+", lines[2]), lines[2]
    assert len(lines) == 3


def test_a_bad_period_stops_the_command_before_any_work(tmp_path, monkeypatch, capsys):
    from s2r.cli import main

    monkeypatch.setenv(ENV, "soon")
    assert main(["check", str(tmp_path / "absent.jsonl"), "--out", str(tmp_path / "out.jsonl")]) == 2
    assert capsys.readouterr().err == f"s2r check: error: {ENV} must be a number of seconds ≥ 0, not 'soon'\n"
