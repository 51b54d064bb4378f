"""Chat-tuning GPT-2: supervised fine-tuning on conversations from a GPT-2 directory adds the
chat role tokens to its tokenizer and grows its vocabulary; text fine-tuning grows nothing."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from configs.base import get_config
from gptjax.data.chat_template import CHAT_RECORD, ChatTemplate, trained_template
from gptjax.data.role_tokens import ROLE_TOKENS
from gptjax.data.tokenizers import CharTokenizer, load_tokenizer
from gptjax.errors import UserError
from gptjax.model import gpt2
from gptjax.model.gpt import GPT
from gptjax.model.vocab_growth import grow_vocab
from gptjax.train import init_from
from gptjax.train.job import run
from gptjax.workdir import load_model
from tests.conftest import tiny, write_corpus
from tests.test_gpt2 import EMBD, IDS, VOCAB, gpt2_weights, hf_config, write_tokenizer

GROWN = VOCAB + len(ROLE_TOKENS)  # 260 -> 264 ids, both within the 320 rows padded to 64


def make_gpt2_dir(d):
    """The tiny GPT-2 directory of tests/test_gpt2.py, for module-scoped fixtures."""
    d.mkdir()
    (d / "config.json").write_text(json.dumps(hf_config()))
    save_file(gpt2_weights(), str(d / "model.safetensors"), metadata={"format": "pt"})
    write_tokenizer(d)
    return d


def write_chats(path) -> None:
    """24 short conversations in 4 groups (plays), each within GPT-2's 12 tiny positions."""
    lines = []
    for i in range(24):
        messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the end"}]
        lines.append(json.dumps({"messages": messages, "group": f"play{i % 4}"}))
    path.write_text("\n".join(lines) + "\n")


def chat_config(root, gpt2_dir, source: str = "conversations"):
    c = tiny(root, write_corpus(root / "corpus"))
    c.train.init_from, c.data.tokenizer, c.data.source = f"hf:{gpt2_dir}", "bpe", source
    if source == "conversations":
        write_chats(root / "chats.jsonl")
        c.data.path = str(root / "chats.jsonl")
        c.data.val_fraction = c.data.test_fraction = 0.25
    c.train.steps, c.train.steps_per_call = 4, 2
    c.train.eval_every = c.train.checkpoint_every = c.train.log_every = 2
    c.sample.prompts = []
    return c


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    """(workdir, config, summary) of 4 SFT steps from the tiny GPT-2 on tiny conversations."""
    root = tmp_path_factory.mktemp("gpt2chat")
    config = chat_config(root, make_gpt2_dir(root / "gpt2"))
    workdir = str(root / "sft")
    return workdir, config, run(config.copy_and_resolve_references(), workdir)


def read_json(*parts):
    with open(os.path.join(*parts)) as f:
        return json.load(f)


def test_sft_from_gpt2_trains_with_the_role_tokens_added_to_its_tokenizer(sft):
    workdir, config, summary = sft
    assert summary["steps"] == config.train.steps and np.isfinite(summary["val_loss"])
    tok = load_tokenizer(os.path.join(workdir, "tokenizer"))
    assert tok.vocab_size == GROWN
    assert [tok.special_ids[t] for t in ROLE_TOKENS] == list(range(VOCAB, GROWN))  # after every GPT-2 id
    assert tok.special_ids["<|endoftext|>"] == VOCAB - 1
    template = trained_template(workdir, tok)
    assert template.role_tokens and template.stop_tokens[0] == tok.special_ids["<|end|>"]
    assert read_json(workdir, CHAT_RECORD)["template"] == "role_tokens"
    grown = read_json(workdir, "environment.json")["init_from"]["vocab_grown"]
    assert (grown["from"], grown["to"], grown["added"]) == (VOCAB, GROWN, list(ROLE_TOKENS))
    assert '"vocab_grown"' in open(os.path.join(workdir, "report.md")).read()
    saved = read_json(workdir, "config.json")
    assert saved["data"]["vocab_size"] == GROWN and saved["model"]["vocab_pad"] == 64


def test_load_model_restores_the_grown_model_and_its_role_rows_trained(sft):
    workdir, _, _ = sft
    model, tok, _ = load_model(workdir)
    assert model.cfg.vocab_size == GROWN and model.wte.embedding.shape == (320, EMBD)
    ids = IDS.copy()
    ids[0, -2:] = tok.special_ids["<|user|>"], tok.special_ids["<|assistant|>"]
    assert np.asarray(model(jnp.asarray(ids))).shape == (1, ids.shape[1], GROWN)  # padded ids never scored
    rows = np.asarray(model.wte.embedding[...])
    user, assistant, end = (rows[tok.special_ids[t]] for t in ("<|user|>", "<|assistant|>", "<|end|>"))
    # the rows started equal (the mean row); training on the role-token template moved them apart
    assert not np.allclose(user, assistant) and not np.allclose(user, end)


@pytest.mark.parametrize("data_source", ["conversations", "dialogues"])
def test_growth_leaves_the_logits_of_the_old_ids_bit_exact(tmp_path, data_source):
    """Growing 260 -> 264 ids fills rows of the 320-row padded table: every array keeps its shape
    and the old ids' rows are untouched, so their logits are the same bits."""
    gpt2_dir = make_gpt2_dir(tmp_path / "gpt2")
    config, source = init_from.resolve(chat_config(tmp_path, gpt2_dir, data_source))
    assert config.data.vocab_size == GROWN and ChatTemplate(source.tokenizer).role_tokens
    original, _ = gpt2.load_gpt2(str(gpt2_dir))
    grown = GPT(dataclasses.replace(original.cfg, vocab_size=GROWN), rngs=nnx.Rngs(1))
    nnx.update(grown, source.params)
    before, after = np.asarray(original(jnp.asarray(IDS))), np.asarray(grown(jnp.asarray(IDS)))
    assert after.shape == (1, IDS.shape[1], GROWN)
    np.testing.assert_array_equal(after[..., :VOCAB], before)
    # the new ids share the mean row, so they start with one logit
    np.testing.assert_allclose(after[..., VOCAB:], np.repeat(after[..., VOCAB:VOCAB + 1], 4, -1), rtol=1e-6)
    table = np.asarray(grown.wte.embedding[...])
    np.testing.assert_allclose(table[VOCAB:GROWN], np.repeat(table[:VOCAB].mean(0, keepdims=True), 4, 0), atol=1e-7)
    assert not table[GROWN:].any()  # padding stays zero
    # the state-level growth of a checkpoint is the module-level growth of a model
    np.testing.assert_array_equal(np.asarray(grow_vocab(original, GROWN).wte.embedding[...]), table)


def test_a_resumed_sft_run_reuses_the_grown_tokenizer(sft, tmp_path):
    workdir, config, _ = sft
    again = str(tmp_path / "sft")
    shutil.copytree(workdir, again)
    c = config.copy_and_resolve_references()
    c.train.steps = config.train.steps + 2
    summary = run(c, again)
    assert summary["steps"] == c.train.steps
    assert load_tokenizer(os.path.join(again, "tokenizer")).vocab_size == GROWN


def test_a_grown_model_exports_as_gpt2_with_its_added_tokens(sft, tmp_path):
    from gptjax.hf_export import export_workdir

    workdir, _, _ = sft
    out = tmp_path / "out"
    assert export_workdir(workdir, str(out))["vocab"] == GROWN
    assert read_json(out, "config.json")["vocab_size"] == GROWN
    added = {t["content"]: t["id"] for t in read_json(out, "tokenizer.json")["added_tokens"]}
    assert {t: added[t] for t in ROLE_TOKENS} == dict(zip(ROLE_TOKENS, range(VOCAB, GROWN)))
    declared = read_json(out, "tokenizer_config.json")["added_tokens_decoder"]  # beyond vocab.json
    assert {int(i): d["content"] for i, d in declared.items()} == dict(zip(range(VOCAB, GROWN), ROLE_TOKENS))
    model, tok, _ = load_model(workdir)
    again, again_tok = gpt2.load_gpt2(str(out))
    assert again.cfg.vocab_size == GROWN and again_tok.special_ids == tok.special_ids
    ids = IDS.copy()
    ids[0, -3:] = [VOCAB + 1, VOCAB + 2, VOCAB + 3]
    np.testing.assert_array_equal(np.asarray(model(jnp.asarray(ids))), np.asarray(again(jnp.asarray(ids))))


def test_a_text_fine_tune_from_gpt2_grows_nothing(tmp_path):
    gpt2_dir = make_gpt2_dir(tmp_path / "gpt2")
    config = chat_config(tmp_path, gpt2_dir, source="files")
    _, source = init_from.resolve(config)
    original, _ = gpt2.load_gpt2(str(gpt2_dir))
    assert source.tokenizer.vocab_size == VOCAB and "vocab_grown" not in source.record
    np.testing.assert_array_equal(np.asarray(source.params["wte"]["embedding"][...]),
                                  np.asarray(original.wte.embedding[...]))
    config.train.steps = 2
    run(config, str(tmp_path / "ft"))
    assert load_tokenizer(str(tmp_path / "ft" / "tokenizer")).vocab_size == VOCAB
    assert read_json(tmp_path / "ft", "config.json")["data"]["vocab_size"] == VOCAB
    assert "vocab_grown" not in read_json(tmp_path / "ft", "environment.json")["init_from"]
    assert not (tmp_path / "ft" / CHAT_RECORD).exists()


def test_lora_over_a_source_without_role_tokens_is_one_clear_line(tmp_path):
    config = chat_config(tmp_path, make_gpt2_dir(tmp_path / "gpt2"))
    config.train.lora_rank = 2
    with pytest.raises(UserError, match="lora_rank=2 its embedding stays frozen"):
        init_from.resolve(config)


def test_a_char_source_keeps_the_plain_template():
    source = init_from.Source({}, {"kind": "gpt"}, CharTokenizer("abc :\n"), nnx.State({}), nnx.State({}))
    config = get_config("smoke")
    config.data.source, config.train.init_from = "conversations", "runs/char"
    assert init_from.with_chat_vocabulary(source, config) is source
