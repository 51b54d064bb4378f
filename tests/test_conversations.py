"""Conversation data for fine-tuning: the template round trip, reading JSONL, splits, truncation,
packing with segment ids, and batches by (seed, step)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from configs.base import get_config
from gptjax.data import conversations as conv
from gptjax.data.chat_template import ChatTemplate, Turn
from gptjax.data.prepare import prepare
from gptjax.data.tokenizers import BPETokenizer, CharTokenizer
from gptjax.errors import UserError

WORDS = "the king is dead long live the king what news my lord none good sir speak on "


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train([WORDS * 20], 300)


def turns(*pairs) -> tuple[Turn, ...]:
    return tuple(Turn(r, t) for r, t in pairs)


CONVERSATION = turns(("system", "You are the king."), ("user", "what news"), ("assistant", "none good sir"),
                     ("user", "speak on"), ("assistant", "long live the king"))


def test_template_round_trip_and_weights_on_assistant_tokens(bpe):
    template = ChatTemplate(bpe)
    ids, weights = template.render(CONVERSATION)
    assert template.parse(ids) == list(CONVERSATION)
    assert weights.dtype == np.float32 and set(weights.tolist()) == {0.0, 1.0}
    end = bpe.special_ids["<|end|>"]
    learned = ids[weights == 1.0]
    assert bpe.decode(learned) == "none good sir" + "long live the king"
    assert (learned == end).sum() == 2 and ids[np.flatnonzero(weights)[-1]] == end
    opened, w = template.render(CONVERSATION[:2], open_reply=True)
    assert template.parse(opened)[-1] == Turn("assistant", "") and not w.any()


def test_plain_template_round_trip():
    tok = CharTokenizer(conv.tokenizer_text([conv.Conversation(CONVERSATION, "g", "x")]))
    template = ChatTemplate(tok)
    ids, weights = template.render(CONVERSATION)
    assert template.parse(ids) == list(CONVERSATION)
    assert tok.decode(ids[weights == 1]) == " none good sir\n long live the king\n"


def write_lines(path, lines) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def record(*pairs, **extra) -> str:
    return json.dumps({"messages": [{"role": r, "content": t} for r, t in pairs], **extra})


def test_reading_reports_each_bad_line_with_file_and_line(tmp_path):
    path = write_lines(tmp_path / "chat.jsonl", [
        record(("user", "hi"), ("assistant", "ho")),
        "{not json",
        "",
        json.dumps({"text": "no messages"}),
        record(("user", "hi"), ("tool", "42"), ("assistant", "ho")),
        record(("user", "only a question")),
        json.dumps({"messages": [{"role": "user"}]}),
        record(("system", "s"), ("user", "a"), ("assistant", "b"), group="play"),
    ])
    found, stats = conv.read_conversations(path)
    assert [c.where for c in found] == [f"{path}:1", f"{path}:8"]
    assert found[1].group == "play" and found[0].group == f"{path}:1"
    assert (stats.lines, stats.conversations, stats.malformed, stats.no_assistant) == (7, 2, 4, 1)
    assert stats.unknown_roles == {"tool": 1}
    assert [p.split(": ")[0] for p in stats.problems] == [f"{path}:{n}" for n in (2, 4, 5, 6, 7)]
    assert "unknown role 'tool'" in stats.problems[2] and "no assistant turn" in stats.problems[3]
    with pytest.raises(UserError, match=f"{path}:2: not valid JSON"):
        conv.read_conversations(path, strict=True)


def test_no_usable_conversation_and_missing_path_are_user_errors(tmp_path):
    path = write_lines(tmp_path / "chat.jsonl", [record(("user", "hi"))])
    with pytest.raises(UserError, match="holds no usable conversation"):
        conv.read_conversations(path)
    with pytest.raises(UserError, match="matches no .jsonl"):
        conv.read_conversations(str(tmp_path / "missing"))


def test_write_then_read_gives_the_conversations_back(tmp_path):
    written = [conv.Conversation(CONVERSATION, "hamlet", "x"), conv.Conversation(CONVERSATION[1:3], "lear", "y")]
    path = str(tmp_path / "out" / "c.jsonl")
    conv.write_conversations(path, written)
    back, _ = conv.read_conversations(path)
    assert [(c.turns, c.group) for c in back] == [(c.turns, c.group) for c in written]


def many(groups: int, per_group: int) -> list[conv.Conversation]:
    return [conv.Conversation(turns(("user", f"q{g} {i}"), ("assistant", f"a{g} {i}")), f"g{g}", f"f:{g}:{i}")
            for g in range(groups) for i in range(per_group)]


def test_splits_keep_groups_whole_and_follow_the_seed():
    data = many(10, 3)
    a = conv.split_conversations(data, 0.2, 0.1, seed=1)
    assert a == conv.split_conversations(data, 0.2, 0.1, seed=1)
    assert all(a[s] for s in conv.SPLITS) and sum(map(len, a.values())) == len(data)
    where = {c.group: s for s, cs in a.items() for c in cs}
    assert all(where[c.group] == s for s, cs in a.items() for c in cs)
    assert any(conv.split_conversations(data, 0.2, 0.1, seed=s) != a for s in range(2, 6))
    with pytest.raises(UserError, match="at least 3 groups"):
        conv.split_conversations(many(2, 5), 0.2, 0.1, seed=0)


def test_truncation_keeps_the_system_turn_and_the_latest_exchange(bpe):
    template = ChatTemplate(bpe)
    full, _ = template.render(CONVERSATION)
    kept = [CONVERSATION[0]] + list(CONVERSATION[3:])
    expect, expect_w = template.render(kept)
    ids, weights, cut = conv.render_truncated(template, CONVERSATION, len(expect))
    assert cut and ids.tolist() == expect.tolist() and weights.tolist() == expect_w.tolist()
    ids, weights, cut = conv.render_truncated(template, CONVERSATION, len(full))
    assert not cut and ids.tolist() == full.tolist()
    # not one assistant token fits after the system turn: dropped
    assert conv.render_truncated(template, CONVERSATION, len(template.render(kept[:1])[0])) is None


def test_a_long_prompt_loses_its_beginning_then_the_reply_its_end(bpe):
    template = ChatTemplate(bpe)
    system, reply = Turn("system", "You are the king."), Turn("assistant", "long live the king")
    prompt = Turn("user", WORDS * 3)
    s, _ = template.render([system])
    head = template.header("user")
    body = template.render_turn(prompt)[0][len(head):]
    a, a_w = template.render_turn(reply)
    full = len(s) + len(head) + len(body) + len(a)
    ids, weights, cut = conv.render_truncated(template, (system, prompt, reply), full - 5)
    assert cut and ids.tolist() == [*s, *head, *body[5:], *a] and weights[-len(a):].tolist() == a_w.tolist()
    # the prompt keeps at least a quarter of the window; then the reply is cut at its end
    window = len(s) + len(head) + len(a)
    ids, weights, cut = conv.render_truncated(template, (system, prompt, reply), window)
    quarter = window // 4
    assert 0 < quarter < len(a)
    assert ids.tolist() == [*s, *head, *body[len(body) - quarter:], *a][:window]
    assert len(ids) == window and weights[-1] == 1.0 and ids[-1] != bpe.special_ids["<|end|>"]

    # turns after the last assistant turn carry no loss and are not rendered
    ids, _, _ = conv.render_truncated(template, CONVERSATION[:3] + (Turn("user", "speak on"),), 10_000)
    assert template.parse(ids) == list(CONVERSATION[:3])


def test_packing_keeps_conversations_whole_and_numbers_their_segments(bpe):
    template = ChatTemplate(bpe)
    data = many(6, 5) + [conv.Conversation(CONVERSATION, "long", "z")]
    block = 24
    packed = conv.pack_split(template, data, block, seed=3)
    assert packed.tokens.shape == packed.weights.shape == packed.segments.shape
    assert packed.tokens.shape[1] == block + 1 and packed.tokens.dtype == np.int32
    assert packed.conversations == len(data) and packed.truncated == 1 and packed.dropped == 0
    pieces = []
    for row_t, row_w, row_s in zip(packed.tokens, packed.weights, packed.segments):
        assert (row_t[row_s == 0] == 0).all() and not row_w[row_s == 0].any()
        ids = row_s[row_s > 0]
        assert ids.tolist() == sorted(ids.tolist()) and set(ids.tolist()) == set(range(1, ids.max() + 1))
        for s in range(1, ids.max() + 1):
            pieces.append(row_t[row_s == s].tolist())
            assert (np.flatnonzero(row_s == s) == np.flatnonzero(row_s == s)[0] + np.arange(len(pieces[-1]))).all()
    rendered = {tuple(template.render(c.turns)[0].tolist()) for c in data}
    assert sum(tuple(p) in rendered for p in pieces) == len(data) - 1  # all but the truncated one
    again = conv.pack_split(template, data, block, seed=3)
    assert (again.tokens == packed.tokens).all() and (again.segments == packed.segments).all()
    assert 0 < packed.fill <= 1


def test_batches_follow_seed_and_step_and_never_learn_across_conversations(bpe):
    packed = conv.pack_split(ChatTemplate(bpe), many(8, 6), 20, seed=0)
    n = len(packed.tokens)
    inputs, targets, weights, segments = conv.conversation_batch(packed, seed=5, step=2, batch_size=4)
    assert inputs.shape == targets.shape == weights.shape == segments.shape == (4, 20)
    assert weights.dtype == np.float32 and inputs.dtype == segments.dtype == np.int32
    again = conv.conversation_batch(packed, seed=5, step=2, batch_size=4)
    assert all((a == b).all() for a, b in zip(again, (inputs, targets, weights, segments)))
    assert (inputs[:, 1:] == targets[:, :-1]).all()
    # a target gets weight only inside the conversation of its input, on an assistant token
    full = packed.segments[conv.epoch_rows(5, 2, 4, n)]
    assert not weights[full[:, 1:] != full[:, :-1]].any()
    # each epoch visits every row once
    seen = np.concatenate([conv.epoch_rows(5, s, 3, n) for s in range(n)])
    assert all(sorted(seen[e * n:(e + 1) * n].tolist()) == list(range(n)) for e in range(3))
    rows = sum(int((w.sum(1) > 0).sum()) for *_, w, _ in conv.sequential_conversation_batches(packed, 3))
    assert rows == int((packed.weights.sum(1) > 0).sum())


def test_segment_positions_restart_at_each_conversation():
    seg = np.array([[1, 1, 1, 2, 2, 0, 0], [1, 2, 3, 3, 3, 3, 3]])
    assert conv.segment_positions(seg).tolist() == [[0, 1, 2, 0, 1, 0, 1], [0, 0, 0, 1, 2, 3, 4]]


def test_prepare_packs_a_conversations_source(tmp_path):
    lines = [record(("system", f"You are {g}."), ("user", "what news"), ("assistant", f"none {i}"), group=g)
             for g in ("a", "b", "c", "d") for i in range(3)]
    c = get_config()
    c.data.source, c.data.path = "conversations", write_lines(tmp_path / "c.jsonl", lines)
    c.data.val_fraction, c.data.test_fraction = 0.25, 0.25
    with pytest.raises(UserError, match="within model.block_size=16"):
        prepare(c.data, seed=0, block_size=16)  # the system turn leaves no room for the reply
    corpus = prepare(c.data, seed=0, block_size=64)
    assert set(corpus.packed) == {"train", "val", "test"}
    for split in corpus.packed.values():
        assert split.tokens.shape[1] == 65 and split.weights.any() and split.segments.max() >= 1
    assert corpus.stats.conversations == 12 and corpus.tokenizer.kind == "char"
    assert len(corpus.token_chars) == corpus.tokenizer.vocab_size
