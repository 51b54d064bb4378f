"""The switches the claim experiments turn: train_chars, augmentation in the step, the
encoder-decoder in the loop, per-layer norms, and the grain loader."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax.data.prepare import prepare
from gptjax.errors import UserError
from gptjax.experiments import parse_runs
from gptjax.train import config_checks
from gptjax.train import state as state_lib
from gptjax.train.model_steps import input_split, window_pairs
from gptjax.train.job import run
from gptjax.train.layer_norms import grouped_norms
from gptjax.train.optimizer import build_optimizer
from gptjax.train.step import make_train_step
from gptjax.data.pairs import lm_split


def records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_train_chars_cuts_only_the_train_split(tiny_config):
    full = prepare(tiny_config.data, 0)
    tiny_config.data.train_chars = 500
    cut = prepare(tiny_config.data, 0)
    assert cut.chars["train"] == 500 < full.chars["train"]
    assert cut.chars["val"] == full.chars["val"] and cut.chars["test"] == full.chars["test"]
    assert cut.cache_dir != full.cache_dir  # its own cache entry, and so its own n-gram key


def test_ngram_runs_keep_their_overrides():
    from ml_collections import ConfigDict

    from configs.base import get_config
    sweep = ConfigDict(dict(sweep=True, base=get_config(), seeds=[0],
                            runs=[dict(name="5-gram", kind="ngram", order=5, overrides={"data.train_chars": 100})]))
    assert parse_runs(sweep)[0].overrides == {"data.train_chars": 100}


def test_augmentation_corrupts_inputs_inside_the_step_and_leaves_targets(tiny_config):
    tiny_config.data.augment, tiny_config.data.augment_rate = "token_noise", 0.5
    split = input_split(tiny_config, vocab_size=30)
    batch = jnp.asarray(np.random.default_rng(0).integers(0, 30, size=(4, 17)), jnp.int32)
    inputs, targets = split(batch, jnp.asarray(3))
    np.testing.assert_array_equal(targets, batch[:, 1:])
    assert 0 < int((inputs != batch[:, :-1]).sum()) < inputs.size
    tiny_config.data.augment = "none"
    assert input_split(tiny_config, 30) is None  # the plain step, unchanged


def test_augmented_step_trains_on_other_inputs(tiny_config):
    corpus = prepare(tiny_config.data, 0)
    vocab = corpus.tokenizer.vocab_size
    graphdef, params, _ = state_lib.abstract_model(tiny_config.model, vocab, 0)
    tx = build_optimizer(tiny_config.train, params)
    batch = jnp.asarray(corpus.tokens["train"][:4 * 17].astype(np.int32).reshape(1, 1, 4, 17))
    losses = {}
    for kind in ("none", "span_mask"):
        tiny_config.data.augment = kind
        step = make_train_step(graphdef, tx, tiny_config.train, 0, split=input_split(tiny_config, vocab))
        _, metrics = jax.jit(step)(state_lib.fresh_state(tiny_config.model, vocab, 0, tx), batch)
        losses[kind] = float(metrics["loss"][0])
    assert losses["none"] != losses["span_mask"]


def test_window_pairs_match_the_host_lm_split():
    window = np.random.default_rng(1).integers(0, 50, size=(3, 12)).astype(np.int32)
    host, device = lm_split(window, 5), window_pairs(jnp.asarray(window), 5)
    for a, b in zip(host, device):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_encdec_config_is_checked(tiny_config):
    tiny_config.model.kind = "encdec"
    with pytest.raises(UserError, match="data.pairs=lm_split"):
        config_checks.check_config(tiny_config)
    tiny_config.data.pairs, tiny_config.data.src_len = "lm_split", 16
    with pytest.raises(UserError, match="data.src_len"):
        config_checks.check_config(tiny_config)
    tiny_config.model.kind, tiny_config.data.src_len = "gpt", 8
    with pytest.raises(UserError, match="model.kind=encdec only"):
        config_checks.check_config(tiny_config)


def test_encdec_trains_in_the_loop_on_target_tokens(tiny_config, tmp_path):
    c = tiny_config
    c.model.kind, c.model.n_encoder_layer, c.model.n_layer = "encdec", 1, 1
    c.data.pairs, c.data.src_len = "lm_split", 8
    c.sample.prompts = []
    c.train.log_layer_norms = True
    summary = run(c, str(tmp_path / "encdec"))
    assert np.isfinite(summary["val_bpc"]) and summary["steps"] == c.train.steps
    logged = records(str(tmp_path / "encdec"))
    assert logged[0]["step"] == 0 and "layer_grad_norm/encoder.0" in logged[0]
    assert "layer_grad_norm/decoder.0" in logged[-1]
    assert os.path.exists(tmp_path / "encdec" / "layer_norms.png")


def test_gpt_logs_layer_norms_and_plots_them(tiny_config, tmp_path):
    tiny_config.train.log_layer_norms = True
    run(tiny_config, str(tmp_path / "gpt"))
    logged = records(str(tmp_path / "gpt"))
    first, later = logged[0], [r for r in logged if "train_loss" in r]
    assert first["step"] == 0 and "train_loss" not in first
    for key in ("layer_grad_norm/h.0", "layer_grad_norm/h.1", "layer_weight_norm/h.1",
                "layer_activation_rms/h.1", "layer_weight_norm/wte"):
        assert key in first and key in later[-1] and first[key] > 0
    assert first["layer_weight_norm/h.0"] != later[-1]["layer_weight_norm/h.0"]  # training moved it
    assert os.path.exists(tmp_path / "gpt" / "layer_norms.png")
    events = [f for f in os.listdir(tmp_path / "gpt") if f.startswith("events.out.tfevents")]
    assert events  # the same figures go to TensorBoard


def test_grouped_norms_sum_per_block():
    tree = {"h": {0: {"a": jnp.full((2,), 3.0)}, 1: {"a": jnp.full((1,), 4.0)}}, "wte": jnp.ones((4,))}
    norms = grouped_norms(tree)
    assert {k: round(float(v), 4) for k, v in norms.items()} == {"h.0": round(float(np.sqrt(18)), 4),
                                                                 "h.1": 4.0, "wte": 2.0}


def test_grain_loader_trains_like_the_direct_one(tiny_config, tmp_path):
    tiny_config.train.steps = 5
    direct = run(tiny_config, str(tmp_path / "direct"))
    tiny_config.data.loader, tiny_config.data.loader_threads = "grain", 2
    config_checks.check_config(tiny_config)
    grain = run(tiny_config, str(tmp_path / "grain"))
    assert grain["val_loss"] == direct["val_loss"]
