"""LoRA adapters: exact base logits at start, merge, adapter-only training, files, switching."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from gptjax.errors import UserError
from gptjax.model import lora
from gptjax.model.gpt import GPT, GPTConfig

CFG = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)
IDX = jnp.asarray(np.random.default_rng(0).integers(0, CFG.vocab_size, (2, 12)), jnp.int32)


def base(cfg: GPTConfig = CFG) -> GPT:
    return GPT(cfg, rngs=nnx.Rngs(0))


def settings(rank: int = 4, alpha: float = 8.0, targets="attn,mlp") -> lora.LoRASettings:
    return lora.LoRASettings.create(rank, alpha, targets)


def randomize_b(model: GPT, seed: int) -> None:
    """Give every B a nonzero value, as training would."""
    key = jax.random.key(seed)
    for i, (_, layer) in enumerate(lora.adapted_layers(model)):
        b = layer.lora.lora_b
        b.set_value(0.05 * jax.random.normal(jax.random.fold_in(key, i), b.get_value().shape))


def test_settings_from_config_and_targets():
    from configs.base import get_config
    tc = get_config().train
    assert lora.LoRASettings.from_config(tc) is None  # no lora_rank key, or 0: off
    tc.lora_rank, tc.lora_alpha, tc.lora_targets = 8, 16.0, "c_attn,c_proj"
    s = lora.LoRASettings.from_config(tc)
    assert (s.rank, s.scale, s.targets) == (8, 2.0, ("attn.c_attn", "attn.c_proj", "mlp.c_proj"))
    assert settings(targets=["mlp"]).targets == ("mlp.c_fc", "mlp.c_gate", "mlp.c_proj")
    for bad, message in ((dict(rank=-1), "lora_rank"), (dict(alpha="big"), "lora_alpha"),
                         (dict(targets="attn,wte"), "'wte'"), (dict(targets=" , "), "empty")):
        with pytest.raises(UserError, match=message):
            settings(**bad)


def test_zero_b_gives_exactly_the_base_logits_and_keeps_axes():
    model = base()
    forward = jax.jit(lambda m: m(IDX))
    expected, expected_jit = model(IDX), forward(model)
    lora.apply_lora(model, settings(), nnx.Rngs(1))
    layers = lora.adapted_layers(model)
    assert len(layers) == 4 * CFG.n_layer  # c_attn, attn.c_proj, c_fc, mlp.c_proj: c_gate is SwiGLU's only
    np.testing.assert_array_equal(np.asarray(model(IDX)), np.asarray(expected))
    np.testing.assert_array_equal(np.asarray(forward(model)), np.asarray(expected_jit))
    c_attn = model.h[0].attn.c_attn
    assert c_attn.kernel.get_metadata()["logical_axes"] == ("embed", "heads")
    assert c_attn.lora.lora_a.get_metadata()["logical_axes"] == ("embed", None)
    assert c_attn.lora.lora_b.get_metadata()["logical_axes"] == (None, "heads")
    assert c_attn.dot_general is not None and c_attn.dot_general.__name__ == "rows_dot_general"


def test_tied_head_cannot_be_targeted_and_untied_head_can():
    with pytest.raises(UserError, match="lm_head"):
        lora.apply_lora(base(), settings(targets="head"), nnx.Rngs(1))
    untied = base(GPTConfig(**{**CFG.__dict__, "tie_embeddings": False, "activation": "swiglu"}))
    lora.apply_lora(untied, settings(targets="mlp,head"), nnx.Rngs(1))
    assert {lora.layer_name(p) for p, _ in lora.adapted_layers(untied)} == {"mlp.c_fc", "mlp.c_gate",
                                                                            "mlp.c_proj", "lm_head"}


def test_merged_adapter_equals_base_plus_adapter():
    model = lora.apply_lora(base(), settings(), nnx.Rngs(1))
    randomize_b(model, 2)
    adapted = model(IDX)
    assert not np.allclose(np.asarray(adapted), np.asarray(base()(IDX)), atol=1e-3)
    merged = lora.merge_adapters(model)
    assert not lora.adapted_layers(merged) and lora.adapted_layers(model)  # the input keeps its adapters
    assert type(merged.h[0].attn.c_attn) is nnx.Linear
    np.testing.assert_allclose(np.asarray(merged(IDX)), np.asarray(adapted), rtol=1e-5, atol=1e-5)
    # a plain GPT's state: it loads into a freshly built model
    fresh = base()
    nnx.update(fresh, nnx.state(merged))
    np.testing.assert_array_equal(np.asarray(fresh(IDX)), np.asarray(merged(IDX)))


def test_optax_steps_change_only_adapter_params():
    model = lora.apply_lora(base(), settings(), nnx.Rngs(1))
    graphdef, trainable, frozen = lora.trainable_and_frozen(model)
    frozen_before = jax.tree.map(np.asarray, frozen)
    trainable_before = jax.tree.map(np.asarray, trainable)
    tx = optax.adamw(1e-2)
    opt_state = tx.init(trainable)
    assert {type(v) for v in jax.tree.leaves(trainable, is_leaf=lambda x: isinstance(x, nnx.Variable))} \
        == {nnx.LoRAParam}
    n_moments = sum(x.size for x in jax.tree.leaves(opt_state))
    assert n_moments < 3 * lora.adapter_size(model)[0]  # no optimizer state for the base

    def loss_fn(trainable, frozen, batch):
        logits = nnx.merge(graphdef, trainable, frozen)(batch[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean()

    @jax.jit
    def step(trainable, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(trainable, frozen, IDX)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, loss

    losses = []
    for _ in range(4):
        trainable, opt_state, loss = step(trainable, opt_state)
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    jax.tree.map(np.testing.assert_array_equal, frozen_before, jax.tree.map(np.asarray, frozen))
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, np.asarray(b)), trainable_before, trainable)
    assert all(jax.tree.leaves(changed))  # every A and B moved


def test_save_load_round_trip_and_size(tmp_path):
    model = lora.apply_lora(base(), settings(rank=2, alpha=4.0, targets="c_attn"), nnx.Rngs(1))
    randomize_b(model, 3)
    info = lora.save_adapter(model, tmp_path / "HAMLET")
    # per layer: A (16, 2) + B (2, 48)
    assert info.params == CFG.n_layer * (16 * 2 + 2 * 48) == lora.adapter_size(model)[0]
    assert lora.adapter_size(model)[1] == 4 * info.params
    assert sorted(p.name for p in (tmp_path / "HAMLET").iterdir()) == ["adapter.json", "adapter.safetensors"]
    meta = json.loads((tmp_path / "HAMLET" / "adapter.json").read_text())
    assert (meta["rank"], meta["alpha"], meta["targets"]) == (2, 4.0, ["attn.c_attn"])
    assert meta["base_checksum"] == lora.base_checksum(base()) and meta["bytes"] == info.bytes
    assert info.bytes < 4 * info.params + 2048  # the adapter alone, not the base

    adapter = lora.load_adapter(tmp_path / "HAMLET")
    assert adapter.name == "HAMLET" and adapter.settings == lora.current_settings(model)
    fresh = lora.attach_adapter(base(), adapter)
    np.testing.assert_array_equal(np.asarray(fresh(IDX)), np.asarray(model(IDX)))
    assert lora.find_adapters(tmp_path) == {"HAMLET": tmp_path / "HAMLET"}


def test_bad_adapter_files_and_wrong_base_are_refused(tmp_path):
    model = lora.apply_lora(base(), settings(), nnx.Rngs(1))
    lora.save_adapter(model, tmp_path / "a")
    other_base = GPT(CFG, rngs=nnx.Rngs(7))
    with pytest.raises(UserError, match="another base"):
        lora.attach_adapter(other_base, lora.load_adapter(tmp_path / "a"))
    with pytest.raises(UserError, match="no LoRA adapter"):
        lora.load_adapter(tmp_path / "missing")
    (tmp_path / "a" / "adapter.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(UserError, match="cannot be read"):
        lora.load_adapter(tmp_path / "a")
    with pytest.raises(UserError, match="no LoRA adapters"):
        lora.save_adapter(base(), tmp_path / "b")


def test_switching_adapters_over_one_base(tmp_path):
    """Two personas' adapters (different ranks and targets) over one base: each gives its own
    logits, and the base arrays are the same objects throughout."""
    expected = {}
    for name, s, seed in (("HAMLET", settings(rank=4), 1), ("OPHELIA", settings(rank=2, targets="mlp"), 2)):
        m = lora.apply_lora(base(), s, nnx.Rngs(seed))
        randomize_b(m, seed)
        lora.save_adapter(m, tmp_path / name)
        expected[name] = np.asarray(m(IDX))
    adapters = {n: lora.load_adapter(d) for n, d in lora.find_adapters(tmp_path).items()}

    model = base()
    plain = np.asarray(model(IDX))
    kernel = model.h[1].mlp.c_fc.kernel.get_value()
    checksum = lora.base_checksum(model)
    for name in ("HAMLET", "OPHELIA", "HAMLET"):
        lora.attach_adapter(model, adapters[name], checksum)
        np.testing.assert_allclose(np.asarray(model(IDX)), expected[name], rtol=1e-6, atol=1e-6)
        assert model.h[1].mlp.c_fc.kernel.get_value() is kernel
    lora.remove_adapters(model)
    np.testing.assert_array_equal(np.asarray(model(IDX)), plain)
    # serving both at once: clones share the base's arrays, each carries its own adapter
    served = {name: lora.attach_adapter(nnx.clone(model), adapters[name], checksum) for name in adapters}
    for name, m in served.items():
        assert m.h[1].mlp.c_fc.kernel.get_value() is kernel
        np.testing.assert_allclose(np.asarray(m(IDX)), expected[name], rtol=1e-6, atol=1e-6)


def test_existing_train_step_trains_only_the_adapter_of_a_frozen_base():
    """`freeze_base` makes the adapter the model's only nnx.Params: the project's own train step,
    optimizer and state work unchanged, and the base comes back bit-identical."""
    from configs.base import get_config
    from gptjax.train.optimizer import build_optimizer
    from gptjax.train.step import TrainState, make_train_step

    model = lora.freeze_base(lora.apply_lora(base(), settings(), nnx.Rngs(1)))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    assert {type(v) for v in jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable))} \
        == {nnx.LoRAParam}
    tc = get_config().train
    tc.warmup_steps, tc.learning_rate = 0, 1e-2
    tx = build_optimizer(tc, params)
    state = TrainState(jnp.zeros((), jnp.int32), params, rest, tx.init(params))
    rest_before, params_before = jax.tree.map(np.asarray, rest), jax.tree.map(np.asarray, params)
    batches = jnp.broadcast_to(IDX[:, :9], (3, 1, 2, 9))  # 3 steps of one micro-batch of 2 rows
    state, metrics = jax.jit(make_train_step(graphdef, tx, tc, seed=0))(state, batches)
    losses = metrics["loss"]
    assert float(losses[-1]) < float(losses[0])
    jax.tree.map(np.testing.assert_array_equal, rest_before, jax.tree.map(np.asarray, state.rest))
    moved = jax.tree.map(lambda a, b: not np.array_equal(a, np.asarray(b)), params_before, state.params)
    assert all(jax.tree.leaves(moved))

    trained = nnx.merge(graphdef, state.params, state.rest)
    merged = lora.merge_adapters(trained)  # a plain GPT again: nnx.Params only
    assert not jax.tree.leaves(nnx.state(merged, lora.FrozenParam))
    np.testing.assert_allclose(np.asarray(merged(IDX)), np.asarray(trained(IDX)), rtol=1e-5, atol=1e-5)
    assert lora.base_checksum(trained) == lora.base_checksum(base())


def test_generation_with_an_adapter_matches_its_merged_model(tmp_path):
    """The chat's /persona path: attach an adapter, rebuild the Generator (same graph for adapters
    of the same settings, so no recompilation), decode; the merged model decodes the same tokens."""
    from gptjax.data.tokenizers import CharTokenizer
    from gptjax.generate.generator import Generator
    from gptjax.generate.settings import GenerationSettings

    tok = CharTokenizer("abcdefghijklmnopqrstuvwxyz .,'\n")
    cfg = GPTConfig(**{**CFG.__dict__, "vocab_size": tok.vocab_size})
    for name, seed in (("a", 1), ("b", 2)):
        m = lora.apply_lora(GPT(cfg, rngs=nnx.Rngs(0)), settings(), nnx.Rngs(seed))
        randomize_b(m, seed)
        lora.save_adapter(m, tmp_path / name)
    model = GPT(cfg, rngs=nnx.Rngs(0))
    s = GenerationSettings(strategy="greedy", max_new_tokens=10)
    graphs, texts = [], []
    for name in ("a", "b"):
        lora.attach_adapter(model, lora.load_adapter(tmp_path / name))
        gen = Generator(model, tok, batch_size=1)
        graphs.append(gen.graphdef)
        texts.append(gen.generate_text(["to be"], s)[0][0].tokens)
        merged = Generator(lora.merge_adapters(model), tok, batch_size=1).generate_text(["to be"], s)
        np.testing.assert_array_equal(merged[0][0].tokens, texts[-1])
    assert graphs[0] == graphs[1]
    assert not np.array_equal(texts[0], texts[1])
