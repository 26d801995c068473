"""The trajectory format: render, parse with character spans, verdicts, token spans."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2r.format import DEFAULT_FORMAT, TrajectoryFormat, parse, render, token_spans, verdict_of

F = DEFAULT_FORMAT
V_BAD = F.verification("Check: 2*3 = 6, not 5.", "incorrect")
V_OK = F.verification("Check: 2*3 = 6.", "correct")
TEXT = render([r"2*3 = \boxed{5}", r"2*3 = \boxed{6}"], [V_BAD, V_OK])


def test_render_pinned():
    assert TEXT == (
        "2*3 = \\boxed{5}\n\n"
        "Wait, let me recheck my solution.\nCheck: 2*3 = 6, not 5.\nTherefore, the answer is incorrect.\n\n"
        "Let me try again.\n2*3 = \\boxed{6}\n\n"
        "Wait, let me recheck my solution.\nCheck: 2*3 = 6.\nTherefore, the answer is correct."
    )


def test_parse_pinned():
    p = parse(TEXT)
    assert [(a.kind, a.answer, a.verdict) for a in p.actions] == [
        ("solve", "5", None), ("verify", None, "incorrect"), ("solve", "6", None), ("verify", None, "correct")]
    # spans start at the separator before each marker, so training an action trains opening it
    assert [TEXT[a.start : a.end][:8] for a in p.actions] == ["2*3 = \\b", "\n\nWait, ", "\n\nLet me", "\n\nWait, "]
    # 15 = len("2*3 = \\boxed{5}"); 94 = 2 + 33 (marker) + 1 + 22 + 1 + 35 (verdict); 35 = 2 + 17 + 1 + 15
    assert p.spans == [(0, 15), (15, 109), (109, 144), (144, len(TEXT))]
    assert p.final_answer == "6" and p.alternates
    assert p.attempts == [r"2*3 = \boxed{5}", r"2*3 = \boxed{6}"] and p.verifications == [V_BAD, V_OK]


def test_text_without_markers_is_one_solve():
    for text in ["", "just \\boxed{3}", "Wait, I think \\boxed{4}\nthe answer is correct."]:
        p = parse(text)
        assert len(p.actions) == 1 and p.actions[0].kind == "solve" and p.spans == [(0, len(text))]


def test_markers_count_only_as_whole_lines():
    text = "x. Wait, let me recheck my solution. \\boxed{1}\nLet me try again. later"
    assert len(parse(text).actions) == 1
    p = parse("a\nWait, let me recheck my solution.   \nok")  # trailing spaces on the marker line are fine
    assert [a.kind for a in p.actions] == ["solve", "verify"] and p.actions[1].text == "ok"


def test_a_repeated_marker_line_is_one_marker():
    # a model that writes the verify (or retry) marker twice opens one verification (attempt), not
    # an empty, unparsable one (an empty attempt without an answer) and then another
    twice = TEXT.replace(F.verify_marker + "\n", (F.verify_marker + "\n") * 2, 1).replace(
        F.retry_marker + "\n", F.retry_marker + "\n \n" + F.retry_marker + "\n")
    p, once = parse(twice), parse(TEXT)
    assert [(a.kind, a.text, a.answer, a.verdict) for a in p.actions] == [
        (a.kind, a.text, a.answer, a.verdict) for a in once.actions]
    assert p.spans[1] == (15, 109 + 34) and p.spans[2] == (143, 143 + 35 + 20)  # the repeats join their actions
    # a marker line after some content is a new action, as before
    assert len(parse(TEXT.replace(F.verify_marker + "\n", F.verify_marker + "\nhm\n" + F.verify_marker + "\n", 1)).actions) == 5


def test_verdicts():
    assert verdict_of("looks fine.\nTherefore, the answer is correct.") == "correct"
    assert verdict_of("Therefore, the answer is correct. No wait. Therefore, the answer is incorrect.") == "incorrect"
    assert verdict_of("I think it's right") == "unparsable"
    assert verdict_of("the answer is correct") == "unparsable"  # not the canonical sentence
    p = parse("\\boxed{1}\n\nWait, let me recheck my solution.\nHmm.")
    assert p.verdicts == ["unparsable"]


def test_text_that_opens_with_a_marker_has_no_first_attempt():
    p = parse("Wait, let me recheck my solution.\nTherefore, the answer is correct.")
    assert [a.kind for a in p.actions] == ["verify"] and not p.alternates


def test_custom_format_and_validation():
    fmt = TrajectoryFormat(verify_marker="<verify>", retry_marker="<retry>",
                           correct_sentence="VERDICT: RIGHT", incorrect_sentence="VERDICT: WRONG")
    text = render(["\\boxed{1}", "\\boxed{2}"], [fmt.verification("", "incorrect"), fmt.verification("", "correct")], fmt)
    assert parse(text, fmt).verdicts == ["incorrect", "correct"]
    assert len(parse(text).actions) == 1  # the default markers do not see these
    with pytest.raises(ValueError):
        TrajectoryFormat(verify_marker="two\nlines")
    with pytest.raises(ValueError):
        TrajectoryFormat(correct_sentence="is correct.", incorrect_sentence="is correct. not")


def test_render_rejects_bad_shapes():
    with pytest.raises(ValueError):
        render([], [])
    with pytest.raises(ValueError):
        render(["a"], ["v1", "v2"])


# Texts that cannot contain a marker line or a verdict sentence (no capital letters).
body = st.text(alphabet="ab1 \n{}\\=.,", max_size=30)


@st.composite
def trajectories(draw):
    n = draw(st.integers(1, 4))
    attempts = [draw(body) for _ in range(n)]
    verdicts = [draw(st.sampled_from(["correct", "incorrect", None])) for _ in range(n - draw(st.integers(0, 1)))]
    verifications = [F.verification(draw(body), v) if v else draw(body) for v in verdicts]
    return attempts, verifications


@settings(max_examples=300, deadline=None)
@given(trajectories())
def test_parse_inverts_render(traj):
    attempts, verifications = traj
    p = parse(render(attempts, verifications))
    assert p.attempts == attempts and p.verifications == verifications
    assert p.alternates


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(body, st.sampled_from([F.verify_marker, F.retry_marker, F.correct_sentence, "\n"])), max_size=12))
def test_spans_tile_any_text(pieces):
    text = "\n".join(pieces)
    p = parse(text)
    assert p.spans[0][0] == 0 and p.spans[-1][1] == len(text)
    assert all(a.end == b.start for a, b in zip(p.actions, p.actions[1:]))
    assert all(a.start <= a.end for a in p.actions)
    for a in p.actions:  # the content lies inside the span
        assert a.text in text[a.start : a.end]


def test_token_spans_hand_example():
    # tokens: "ab" "c\n\nW" "ait" <eos>; actions: [0,3) and [3,7)
    offsets = [(0, 2), (2, 6), (6, 9), (0, 0)]
    assert token_spans(offsets, [(0, 3), (3, 9)]) == [(0, 1), (1, 4)]  # straddler goes to the action it opens
    assert token_spans(offsets, [(0, 9), (9, 9)]) == [(0, 4), (4, 4)]  # an empty action gets an empty span


def test_token_spans_with_a_real_tokenizer(tmp_path):
    """A byte-level BPE trained here, saved and loaded back through transformers' from_pretrained."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([TEXT] * 50, trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"]))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>").save_pretrained(tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)

    enc = hf(TEXT + hf.eos_token, return_offsets_mapping=True, add_special_tokens=False)
    p = parse(TEXT)
    spans = token_spans(enc["offset_mapping"], p.spans)
    assert spans[0][0] == 0 and spans[-1][1] == len(enc["input_ids"])
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert enc["input_ids"][spans[-1][1] - 1] == hf.eos_token_id  # EOS belongs to the last action
    for (t0, t1), action in zip(spans, p.actions):
        decoded = hf.decode(enc["input_ids"][t0:t1], skip_special_tokens=True)
        assert action.text in decoded  # the action's tokens carry its content
