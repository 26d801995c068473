"""The tiny model and the transformers backend, for real (through from_pretrained)."""

import pytest
import torch

from s2r.cli import main
from s2r.models.backend import SamplingParams
from s2r.models.hf import TransformersBackend


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    assert main(["tiny-model", str(path), "--chat-template", "true"]) == 0
    return path


@pytest.fixture(scope="module")
def backend(tiny):
    return TransformersBackend.from_pretrained(str(tiny), batch_size=8)


def test_tokenizer_round_trips_spaces_exactly(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    for text in ["a  b   c", " lead and trail  ", "x = 3 * (4 + 5)\n\ty", r"\boxed{ 1 }  "]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(text) and tok.decode(ids) == text
    assert tok.chat_template and tok.padding_side == "left"


def test_batched_greedy_equals_one_at_a_time(backend):
    prompts = ["Question: 1+1\nAnswer:\n", "hi", "a much longer prompt than the others, to force padding", "x"]
    params = SamplingParams(max_tokens=24)
    batched = backend.complete(prompts, params)
    for prompt, b in zip(prompts, batched):
        (alone,) = backend.complete([prompt], params)
        assert b.token_ids == alone.token_ids and b.text == alone.text


def test_decode_equals_generate_and_dropping_finished_rows_changes_no_other_row(backend):
    from s2r.models.decode import decode

    tok, model = backend.tokenizer, backend.model
    prompts = ["Question: 1+1\nAnswer:\n", "hi", "a much longer prompt than the others", "x", "Compute 4 + 5.", "zz"]
    enc = tok(prompts, return_tensors="pt", padding=True)
    ref = model.generate(**enc, max_new_tokens=120, do_sample=False, temperature=None, top_p=None, top_k=None,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)[:, enc["input_ids"].shape[1]:].tolist()
    ref = [r[: r.index(tok.eos_token_id) + 1] if tok.eos_token_id in r else r for r in ref]
    new, _ = decode(model, enc["input_ids"], enc["attention_mask"], 120, tok.eos_token_id)
    assert new == ref and max(map(len, ref)) > 64  # past the cache's first capacity: it grew
    # a stop rule that ends rows at different steps: the others go on exactly as before
    def ends(ids: list[int]) -> bool:
        return len(ids) >= 2 + ids[0] % 13

    cut = [next((r[: i + 1] for i in range(len(r)) if ends(r[: i + 1])), r) for r in ref]
    assert len({len(c) for c in cut}) > 2
    new, _ = decode(model, enc["input_ids"], enc["attention_mask"], 120, tok.eos_token_id, stopped=ends)
    assert new == cut


def test_each_prompt_its_own_budget_in_one_call(backend):
    prompts = ["Question: 1+1\nAnswer:\n", "hi", "a much longer prompt than the others", "x"]
    budgets = [3, 17, 1, 40]
    together = backend.complete(prompts, SamplingParams(max_tokens=5), budgets)
    for prompt, budget, c in zip(prompts, budgets, together):
        (alone,) = backend.complete([prompt], SamplingParams(max_tokens=budget))
        assert c.token_ids == alone.token_ids and c.finish_reason == alone.finish_reason and c.num_tokens <= budget
    assert [c.num_tokens for c in together if c.finish_reason == "length"] == [b for b, c in zip(budgets, together)
                                                                               if c.finish_reason == "length"]
    assert any(c.finish_reason == "length" for c in together)


def test_top_p_keeps_the_smallest_set_reaching_p():
    from s2r.models.decode import next_tokens

    torch.manual_seed(0)
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log().expand(2000, 3)
    assert set(next_tokens(logits, 1.0, 0.6).tolist()) == {0, 1}
    assert set(next_tokens(logits, 1.0, 0.5).tolist()) == {0}
    assert set(next_tokens(logits, 1.0, 1.0).tolist()) == {0, 1, 2}
    assert next_tokens(logits, 0.0, 1.0).unique().tolist() == [0]


def test_a_temperature_or_top_p_too_small_for_float32_decodes_greedily():
    from s2r.models.decode import next_tokens

    logits = torch.tensor([[1.0, 2.0, 0.5]])  # 2 / 1e-40 is inf in float32: softmax would give NaN
    assert next_tokens(logits, 1e-40, 1.0).tolist() == [1]
    assert next_tokens(logits, 5e-324, 0.5).tolist() == [1]
    assert next_tokens(logits, 1.0, 1e-300).tolist() == [1]  # 1e-300 is 0 in float32: no token would stay


def test_logprobs_match_a_forward_pass(backend):
    prompt = "Question: 2+2\nAnswer:\n"
    (c,) = backend.complete([prompt], SamplingParams(max_tokens=12, logprobs=True))
    tok, model = backend.tokenizer, backend.model
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    full = torch.cat([ids, torch.tensor([c.token_ids])], dim=1)
    with torch.no_grad():
        logp = torch.log_softmax(model(full).logits.float(), dim=-1)  # [1, T, V]
    p = ids.shape[1]
    expected = logp[0, p - 1 : -1].gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0]
    assert torch.allclose(torch.tensor(c.logprobs), expected, atol=1e-4)


def test_sampling_is_seeded_and_stop_strings_cut(backend):
    params = SamplingParams(max_tokens=40, temperature=1.0, seed=3)
    a = backend.complete(["abc"] * 3, params)
    b = backend.complete(["abc"] * 3, params)
    assert [x.text for x in a] == [x.text for x in b]
    assert len({x.text for x in a}) > 1  # different samples within a batch
    (free,) = backend.complete(["abc"], params)
    stop = free.text[5:7]
    (c,) = backend.complete(["abc"], SamplingParams(max_tokens=40, temperature=1.0, seed=3, stop=(stop,)))
    assert c.text == free.text[: free.text.index(stop)] and c.finish_reason == "stop" and c.stop_string == stop
    (d,) = backend.complete(["abc"], SamplingParams(max_tokens=40, temperature=1.0, seed=3, stop=(stop,), include_stop=True))
    assert d.text == free.text[: free.text.index(stop) + len(stop)] and d.num_tokens == c.num_tokens


def test_eos_ends_generation(tiny):
    """Make EOS the most likely token everywhere: generation stops at once, EOS kept in the ids."""
    b = TransformersBackend.from_pretrained(str(tiny))
    with torch.no_grad():
        b.model.lm_head.weight.zero_()  # tied: embeddings too; logits = 0 except a bias we add below
        b.model.model.norm.weight.zero_()
    eos = b.tokenizer.eos_token_id
    hook = b.model.lm_head.register_forward_hook(lambda m, i, out: out.index_fill(-1, torch.tensor([eos]), 5.0))
    (c,) = b.complete(["hello"], SamplingParams(max_tokens=10))
    hook.remove()
    assert c.token_ids == [eos] and c.text == "" and c.finish_reason == "stop" and c.num_tokens == 1


def test_prompt_longer_than_the_model_is_an_error_not_a_crash(tiny):
    b = TransformersBackend.from_pretrained(str(tiny))
    (c,) = b.complete(["x" * 3000], SamplingParams(max_tokens=5))
    assert c.finish_reason == "error" and "positions" in c.error


def test_eval_writes_trajectories_metrics_and_report(tiny, tmp_path, data_dir):
    out = tmp_path / "e"
    args = ["eval", "--model", str(tiny), "--data", "math500", "gsm8k", "--limit", "3", "--out", str(out),
            "--max-tokens", "32", "--template", "plain"]
    assert main(args) == 0
    import json

    from s2r.metrics import load_trajectories

    records = load_trajectories(out / "trajectories.jsonl")
    assert len(records) == 6 and {r["benchmark"] for r in records} == {"math500", "gsm8k"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["benchmarks"]) == {"math500", "gsm8k"}
    assert metrics["benchmarks"]["math500"]["by_level"]
    html = (out / "report.html").read_text()
    assert html.count("<svg") >= 4 and "eval/acc_final" in html
    # running it again reuses the trajectories
    assert main(args) == 0
    assert load_trajectories(out / "trajectories.jsonl") == records


def test_a_long_prompt_in_the_batch_leaves_the_others_their_whole_budget(tmp_path):
    """Positions count per row (left padding does not shift them), so each prompt's room is the
    context minus its own length, not minus the batch's padded length."""
    assert main(["tiny-model", str(tmp_path / "m"), "--max-positions", "64"]) == 0
    backend = TransformersBackend.from_pretrained(str(tmp_path / "m"), batch_size=8)
    params = SamplingParams(max_tokens=40)  # greedy
    short, long_, too_long = "x", "y" * 50, "z" * 70
    a, b, c = backend.complete([short, long_, too_long], params)
    (alone,) = backend.complete([short], params)
    assert a.num_tokens == alone.num_tokens and a.token_ids == alone.token_ids  # not cut to 64 − 70 or 64 − 50
    assert b.num_tokens <= 64 - 50 and b.finish_reason in ("stop", "length")
    assert c.finish_reason == "error" and "leaves no room in 64 positions" in c.error
