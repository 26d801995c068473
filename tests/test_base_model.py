"""Training the embedded task's base model: learnability, determinism, exact resume, caching."""

from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM

import s2r.tasks.arith.base as base
from s2r.tasks import arith
from s2r.train.batching import collate, encode, token_logprobs

TINY = base.BaseConfig(hidden_size=32, layers=2, heads=2, intermediate_size=64, batch_size=8, max_steps=8,
                       eval_every=4, eval_every_near=4, ckpt_every=4, val_problems=10, target_acc=0.99, warmup=2)


def weights(path):
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def test_encode_masks_only_the_completion_and_eos():
    from s2r.models.tiny import char_tokenizer

    tok = char_tokenizer()
    ids, mask = encode(tok, "Q:", "ab")
    assert tok.convert_ids_to_tokens(ids) == ["Q", ":", "a", "b", "<eos>"] and mask == [0, 0, 1, 1, 1]
    batch = collate([(ids, mask), ([5, 6], [0, 1])], tok.pad_token_id)
    assert batch["input_ids"].tolist()[1] == [5, 6, 0, 0, 0] and batch["attention_mask"].tolist()[1] == [1, 1, 0, 0, 0]
    assert batch["loss_mask"].tolist() == [[0, 0, 1, 1, 1], [0, 1, 0, 0, 0]]


def test_a_few_dozen_steps_lower_the_loss_and_beat_chance():
    """40 steps: the loss falls, and teacher-forced next-token accuracy on validation solutions is far
    above chance (1 / 101 tokens). Exact answers need thousands of steps: that is the demo's job."""
    from s2r.models.tiny import TinyModelConfig, build_tiny_model

    torch.manual_seed(0)
    model, tok = build_tiny_model(TinyModelConfig("unused", hidden_size=64, layers=2, heads=4, intermediate_size=128))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    train = list(arith.generate("base", 40 * 16, seed=0))

    def batch_of(problems):
        return collate([encode(tok, base.render_prompt(base.messages_for(p.problem, base.PLAIN), base.PLAIN),
                               arith.solution(p.problem)) for p in problems], tok.pad_token_id)

    losses = []
    for step in range(40):
        b = batch_of(train[step * 16 : (step + 1) * 16])
        mask = b["loss_mask"][:, 1:]
        loss = -(token_logprobs(model, b) * mask).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    val = batch_of(list(arith.generate("val", 50, seed=0)))
    with torch.no_grad():
        pred = model(input_ids=val["input_ids"], attention_mask=val["attention_mask"]).logits[:, :-1].argmax(-1)
    mask = val["loss_mask"][:, 1:].bool()
    accuracy = (pred == val["input_ids"][:, 1:])[mask].float().mean().item()
    assert accuracy > 0.3 > 10 / 101


def test_deterministic_resumable_and_cached(tmp_path, monkeypatch, capsys):
    a = base.train_base(replace(TINY, out=str(tmp_path / "a")))
    b = base.train_base(replace(TINY, out=str(tmp_path / "b")))
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # same seed, same model
    c = base.train_base(replace(TINY, out=str(tmp_path / "c"), seed=1))
    assert not torch.equal(weights(c)["model.embed_tokens.weight"], wa["model.embed_tokens.weight"])

    # killed after the step-4 checkpoint, then resumed: the same weights as the uninterrupted run
    real_lr_at = base.lr_at

    def dies_at_step_6(step, cfg):
        if step == 6:
            raise KeyboardInterrupt
        return real_lr_at(step, cfg)

    monkeypatch.setattr(base, "lr_at", dies_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        base.train_base(replace(TINY, out=str(tmp_path / "d")))
    monkeypatch.setattr(base, "lr_at", real_lr_at)
    assert (tmp_path / "d" / "ckpt.pt").exists() and not (tmp_path / "d" / "base.json").exists()
    d = base.train_base(replace(TINY, out=str(tmp_path / "d")))
    assert "resuming base training at step 4" in capsys.readouterr().err
    wd = weights(d)
    assert all(torch.equal(wa[k], wd[k]) for k in wa)

    # finished with the same settings: reused, not retrained
    stamp = (tmp_path / "a" / "base.json").stat().st_mtime_ns
    assert base.train_base(replace(TINY, out=str(tmp_path / "a"))) == a
    assert "reusing the base model" in capsys.readouterr().err
    assert (tmp_path / "a" / "base.json").stat().st_mtime_ns == stamp
