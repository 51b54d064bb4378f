"""Supervised fine-tuning: packed rows never attend across conversations, the loss reads only
weighted targets and is exact under accumulation, role tokens and vocabulary growth for a base
tokenizer, and a run on conversations from the data to the chat record."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from gptjax.data.chat_template import ChatTemplate, Turn, trained_template
from gptjax.data.role_tokens import ROLE_TOKENS, with_role_tokens
from gptjax.data.tokenizers import BPETokenizer
from gptjax.errors import UserError
from gptjax.model.gpt import GPT, GPTConfig
from gptjax.model.vocab_growth import grow_vocab
from gptjax.train.step import PackedBatch, TrainState, batch_loss, make_train_step
from gptjax.eval.scoring import forward

V, T = 13, 12


def tiny_gpt(pos_encoding="learned", **kw) -> GPT:
    cfg = GPTConfig(vocab_size=V, block_size=T, n_layer=2, n_head=2, n_embd=16, pos_encoding=pos_encoding, **kw)
    return GPT(cfg, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("pos_encoding", ["learned", "rope", "sinusoidal"])
def test_a_packed_conversation_has_the_logits_it_has_alone(pos_encoding):
    model = tiny_gpt(pos_encoding)
    first, second = jnp.array([3, 4, 5, 6, 7]), jnp.array([8, 2, 9, 1])
    row = jnp.concatenate([first, second, jnp.zeros(3, jnp.int32)])[None]
    segments = jnp.array([[1] * 5 + [2] * 4 + [0] * 3])
    packed = model(row, segments=segments)
    np.testing.assert_allclose(packed[0, 5:9], model(second[None])[0], atol=1e-5)
    np.testing.assert_allclose(packed[0, :5], model(first[None])[0], atol=1e-5)
    # without segments the second conversation sees the first: the test can fail
    assert not np.allclose(model(row)[0, 5:9], model(second[None])[0], atol=1e-3)


def packed_batch(tokens, weights, segments) -> PackedBatch:
    return PackedBatch(jnp.asarray(tokens, jnp.int32), jnp.asarray(weights, jnp.float32),
                       jnp.asarray(segments, jnp.int32))


def test_the_loss_equals_a_hand_computation():
    logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]]))
    batch = packed_batch([[0, 1, 1, 2]], [[1.0, 0.0, 1.0]], [[1, 1, 1]])
    expected = -(np.log(0.25) + np.log(0.6)) / 2.0
    assert float(batch_loss(logits, batch, 2.0)) == pytest.approx(expected, rel=1e-6)
    # a text batch keeps the plain mean over every target
    assert float(batch_loss(logits, batch.tokens, None)) == pytest.approx(
        -(np.log(0.25) + np.log(0.8) + np.log(0.6)) / 3, rel=1e-6)


def test_changing_a_masked_target_changes_no_gradient():
    model = tiny_gpt("rope")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    # conversation 1 (user tokens, weight 0) then conversation 2 (its targets weighted)
    tokens = np.array([[3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 2, 1, 3]])
    segments = np.array([[1] * 5 + [2] * 7])
    weights = np.concatenate([np.zeros((1, 5)), np.ones((1, 7))], axis=1)  # conversation 2's targets
    def grads(toks):
        batch = packed_batch(toks, weights, segments)

        def loss(p):
            logits, _ = forward(graphdef, p, rest, batch.tokens[:, :-1], train=False, segments=batch.segments)
            return batch_loss(logits, batch, jnp.maximum(batch.weights.sum(), 1.0))

        return jax.grad(loss)(params)

    changed = tokens.copy()
    changed[0, 4] = 12  # the last user token of conversation 1: a masked target, seen by nothing weighted
    for a, b in zip(jax.tree.leaves(grads(tokens)), jax.tree.leaves(grads(changed))):
        np.testing.assert_allclose(a, b, atol=1e-7)
    changed[0, 7] = 12  # an assistant token of conversation 2 does change it
    assert any(not np.allclose(a, b, atol=1e-7)
               for a, b in zip(jax.tree.leaves(grads(tokens)), jax.tree.leaves(grads(changed))))


def train_config(accum: int) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(l1=0.0, l2=0.0, grad_accum=accum))


def test_accumulation_is_exact_across_micro_batches_of_unequal_weight():
    """Two micro-batches with 1 and 5 weighted targets give the loss and update of one batch."""
    model = tiny_gpt()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.sgd(0.1)
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, V, size=(2, T + 1))
    weights = np.zeros((2, T))
    weights[0, 3] = 1.0
    weights[1, 2:7] = 1.0
    segments = np.ones((2, T))
    whole = packed_batch(tokens[None, None], weights[None, None], segments[None, None])
    split = PackedBatch(*(x.reshape(1, 2, 1, -1) for x in whole))
    results = []
    for batch in (whole, split):
        state = TrainState(jnp.zeros((), jnp.int32), params, rest, tx.init(params))
        new, metrics = make_train_step(graphdef, tx, train_config(1), seed=0)(state, batch)
        results.append((float(metrics["loss"][0]), jax.tree.leaves(new.params)))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("tie", [True, False])
def test_grow_vocab_keeps_old_logits_and_starts_new_rows_at_the_mean(tie):
    model = tiny_gpt(tie_embeddings=tie, vocab_pad=8)
    idx = jnp.array([[1, 2, 3, 4]])
    before, old_rows = model(idx), model.wte.embedding[...][:V]
    grow_vocab(model, V + 4)
    after = model(idx)
    assert after.shape[-1] == V + 4 and model.wte.embedding.shape[0] == 24
    np.testing.assert_allclose(after[..., :V], before, atol=1e-6)
    np.testing.assert_allclose(model.wte.embedding[...][V:V + 4], np.repeat(old_rows.mean(0, keepdims=True), 4, 0),
                               atol=1e-6)
    if not tie:
        np.testing.assert_allclose(model.lm_head.kernel[...][:, V], model.lm_head.kernel[...][:, :V].mean(1), atol=1e-6)
    # the new ids are usable: a grown model reads them
    assert np.isfinite(model(jnp.array([[V, V + 3]]))).all()
    with pytest.raises(UserError, match="cannot shrink"):
        grow_vocab(model, V)


def gpt2_like_tokenizer() -> BPETokenizer:
    """A byte-level BPE with <|endoftext|> only, as GPT-2's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=280, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["the king is dead long live the king " * 20], trainer=trainer)
    return BPETokenizer(tok)


def test_role_tokens_are_appended_to_a_tokenizer_without_them():
    base = gpt2_like_tokenizer()
    assert not ChatTemplate(base).role_tokens
    grown = with_role_tokens(base)
    assert grown.vocab_size == base.vocab_size + 4
    assert sorted(grown.special_ids[t] for t in ROLE_TOKENS) == list(range(base.vocab_size, base.vocab_size + 4))
    text = "the king is dead <|user|>"
    assert grown.encode(text).tolist() == base.encode(text).tolist()  # text spelling a role token stays text
    template = ChatTemplate(grown)
    turns = [Turn("user", "the king"), Turn("assistant", "long live")]
    assert template.role_tokens and template.parse(template.render(turns)[0]) == turns
    assert with_role_tokens(grown) is grown


def conversation_lines(n: int) -> list[str]:
    lines = []
    for i in range(n):
        group = f"play{i % 4}"
        messages = [{"role": "system", "content": f"You are KING{i % 4}."},
                    {"role": "user", "content": "what news my lord"},
                    {"role": "assistant", "content": "none good sir, long live the king"}]
        lines.append(json.dumps({"messages": messages, "group": group}))
    return lines


def test_a_run_on_conversations_trains_scores_assistant_tokens_and_records_its_template(tmp_path, tiny_config):
    from gptjax.train.job import run

    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(conversation_lines(24)) + "\n")
    c = tiny_config
    c.data.source, c.data.path = "conversations", str(path)
    c.data.tokenizer, c.data.vocab_size = "bpe", 300
    c.data.val_fraction, c.data.test_fraction = 0.25, 0.25
    c.model.block_size = 48
    c.train.grad_accum = 2
    c.sample.prompts = []
    summary = run(c, str(tmp_path / "sft"))
    records = [json.loads(line) for line in open(tmp_path / "sft" / "metrics.jsonl")]
    assert all(np.isfinite(r["val_loss"]) for r in records if "val_loss" in r)
    assert np.isfinite(summary["test_bpc"]) and summary["steps"] == c.train.steps
    with open(tmp_path / "sft" / "chat.json") as f:
        record = json.load(f)
    assert record["template"] == "role_tokens" and set(record["role_tokens"]) == set(ROLE_TOKENS)
    from gptjax.data.tokenizers import load_tokenizer

    tok = load_tokenizer(os.path.join(tmp_path, "sft", "tokenizer"))
    assert trained_template(str(tmp_path / "sft"), tok).role_tokens


def tiny_play(title: str, a: str, b: str) -> str:
    speeches = "".join(f"**{a}**  \nWhat news of {title}, good {b}?\n\n**{b}**  \nNone, my lord {a}.\n\n"
                       for _ in range(3))
    return f"# {title}\n\n## ACT I\n\n### SCENE I. A room.\n\n{speeches}"


def test_dialogues_hold_out_the_plays_a_documents_split_base_never_read(monkeypatch):
    from configs.base import get_config
    from gptjax.data import dialogues, splits
    from gptjax.data.cleaning import clean
    from gptjax.data.sources import Document

    docs = [Document(f"p{i}.md", tiny_play(f"Play{i}", f"KING{i}", f"LORD{i}") * (1 + i % 3)) for i in range(8)]
    monkeypatch.setattr(dialogues, "plays", lambda markdown=True: iter(docs))
    c = get_config()
    c.data.source, c.data.split, c.data.tokenizer, c.data.vocab_size = "dialogues", "documents", "bpe", 300
    c.data.val_fraction = c.data.test_fraction = 0.2
    corpus = dialogues.prepare_dialogues(c.data, seed=3, block_size=128)
    cleaned, _ = clean(docs, c.data.clean)
    base = splits.split_text(cleaned, "documents", 0.2, 0.2, 3)  # what a base with the same data.* trains on
    template = ChatTemplate(corpus.tokenizer)
    for name, packed in corpus.packed.items():
        text = "".join(t.text for row in packed.tokens for t in template.parse(row) if t.role == "system")
        kings = {w.rstrip(",") for w in text.split() if w.startswith("LORD") or w.startswith("KING")}
        in_base = {w for w in kings if w in base[name]}
        assert kings and in_base == kings, name  # each split's personas come from that split's plays


def test_a_character_name_becomes_the_persona_training_used():
    from gptjax.cli.chat import system_text
    from gptjax.data.dialogues import character_persona, parse_play

    played = [parse_play("p0.md", tiny_play("Play0", "KING0", "LORD0"))]
    assert character_persona("LORD0", played) == "You are LORD0, in *Play0*."
    assert character_persona("NOBODY", played) is None
    assert system_text("HAMLET") == "You are HAMLET, in *Hamlet*."
    assert system_text("You are a helpful assistant.") == "You are a helpful assistant."


def test_the_chat_record_decides_the_template(tmp_path):
    from gptjax.data.chat_template import CHAT_RECORD

    tok = with_role_tokens(gpt2_like_tokenizer())
    assert trained_template(str(tmp_path), tok).role_tokens  # no record: as the tokenizer allows
    (tmp_path / CHAT_RECORD).write_text(json.dumps({"template": "plain"}))
    assert not trained_template(str(tmp_path), tok).role_tokens
    (tmp_path / CHAT_RECORD).write_text(json.dumps({"template": "role_tokens"}))
    assert trained_template(str(tmp_path), tok).role_tokens
    with pytest.raises(UserError, match="role tokens"):
        trained_template(str(tmp_path), gpt2_like_tokenizer())


def test_the_study_scores_assistant_tokens_and_asks_each_prompt_of_two_characters():
    from gptjax.data import conversations as conv
    from gptjax.eval import persona_study as study

    tok = with_role_tokens(gpt2_like_tokenizer())
    template = ChatTemplate(tok)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16),
                rngs=nnx.Rngs(0))
    convs = [conv.Conversation((Turn("system", "You are KING0, in *Play0*."), Turn("user", "the king"),
                                Turn("assistant", "long live" + " the king" * i)), f"g{i}", f"x:{i}") for i in range(5)]
    scored = study.assistant_bpc(model, template, convs, 64)
    assert scored["tokens"] == sum(int(template.render(c.turns)[1].sum()) for c in convs)
    assert np.isfinite(scored["bits_per_char"])

    class Judge:
        labels = ["KING0 (Play0)", "LORD0 (Play0)", "DUKE (Other Play)"]

    fp = study.fidelity_prompts(Judge(), convs, seed=0)
    assert len(set(fp.requested)) == 3 and all(r != w for r, w in zip(fp.right, fp.wrong))
    assert all(study.persona_text(*study.label_parts(r)) == s for r, s in zip(fp.requested, fp.right))
    assert fp.prompts[0] == list(convs[0].turns[:2])
    assert study.overlap(["long live the king"], ["long live the king"])["bleu"] == pytest.approx(100.0)
