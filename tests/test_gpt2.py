"""GPT-2 in Hugging Face's format: a tiny directory built here (numpy -> safetensors, a small
byte-level vocabulary), checked against an independent numpy forward pass of GPT-2."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from gptjax.data.tokenizers import CharTokenizer, byte_to_unicode, load_tokenizer
from gptjax.errors import UserError
from gptjax.model import gpt2
from gptjax.model.gpt import GPT, GPTConfig

LAYERS, HEADS, EMBD, POSITIONS = 2, 2, 16, 12
MERGES = ["h e", "Ġ t", "Ġt he"]
VOCAB = 256 + len(MERGES) + 1  # bytes, merges, <|endoftext|>


def gpt2_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.normal(0, 0.2, shape).astype(np.float32)  # noqa: E731
    w = {"wte.weight": normal(VOCAB, EMBD), "wpe.weight": normal(POSITIONS, EMBD),
         "ln_f.weight": 1 + normal(EMBD), "ln_f.bias": normal(EMBD)}
    for i in range(LAYERS):
        shapes = {"ln_1.weight": (EMBD,), "ln_1.bias": (EMBD,), "ln_2.weight": (EMBD,), "ln_2.bias": (EMBD,),
                  "attn.c_attn.weight": (EMBD, 3 * EMBD), "attn.c_attn.bias": (3 * EMBD,),
                  "attn.c_proj.weight": (EMBD, EMBD), "attn.c_proj.bias": (EMBD,),
                  "mlp.c_fc.weight": (EMBD, 4 * EMBD), "mlp.c_fc.bias": (4 * EMBD,),
                  "mlp.c_proj.weight": (4 * EMBD, EMBD), "mlp.c_proj.bias": (EMBD,)}
        w.update({f"h.{i}.{k}": (1 + normal(*s)) if k.startswith("ln") and k.endswith("weight") else normal(*s)
                  for k, s in shapes.items()})
    return w


def write_tokenizer(d):
    alphabet = [byte_to_unicode()[b] for b in range(256)]
    pieces = alphabet + [m.replace(" ", "") for m in MERGES] + ["<|endoftext|>"]
    (d / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(pieces)}), encoding="utf-8")
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n", encoding="utf-8")


def hf_config() -> dict:
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": VOCAB,
            "n_positions": POSITIONS, "n_embd": EMBD, "n_layer": LAYERS, "n_head": HEADS, "n_inner": None,
            "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True}


@pytest.fixture
def gpt2_dir(tmp_path):
    d = tmp_path / "gpt2"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(hf_config()))
    save_file(gpt2_weights(), str(d / "model.safetensors"), metadata={"format": "pt"})
    write_tokenizer(d)
    return d


def numpy_gpt2(w: dict, ids: np.ndarray) -> np.ndarray:
    """GPT-2's forward pass for one sequence, in float64, from the Hugging Face tensors."""
    w = {k: v.astype(np.float64) for k, v in w.items()}

    def norm(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * w[f"{name}.weight"] + w[f"{name}.bias"]

    def conv1d(x, name):
        return x @ w[f"{name}.weight"] + w[f"{name}.bias"]

    T, H = len(ids), EMBD // HEADS
    x = w["wte.weight"][ids] + w["wpe.weight"][:T]
    for i in range(LAYERS):
        q, k, v = np.split(conv1d(norm(x, f"h.{i}.ln_1"), f"h.{i}.attn.c_attn"), 3, axis=-1)
        q, k, v = (t.reshape(T, HEADS, H).transpose(1, 0, 2) for t in (q, k, v))
        scores = np.where(np.tril(np.ones((T, T), bool)), q @ k.transpose(0, 2, 1) / np.sqrt(H), -np.inf)
        p = np.exp(scores - scores.max(-1, keepdims=True))
        y = (p / p.sum(-1, keepdims=True)) @ v
        x = x + conv1d(y.transpose(1, 0, 2).reshape(T, EMBD), f"h.{i}.attn.c_proj")
        h = conv1d(norm(x, f"h.{i}.ln_2"), f"h.{i}.mlp.c_fc")
        h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h ** 3)))
        x = x + conv1d(h, f"h.{i}.mlp.c_proj")
    return norm(x, "ln_f") @ w["wte.weight"].T


IDS = np.array([[5, 259, 72, 258, 0, 255, 101, 256, 3, 257, 44, 9]], np.int32)


def test_imported_gpt2_gives_the_logits_of_an_independent_numpy_gpt2(gpt2_dir):
    model, tokenizer = gpt2.load_gpt2(str(gpt2_dir))
    assert model.cfg.vocab_size == VOCAB and model.wte.embedding.shape == (320, EMBD)  # padded to 64
    assert (model.cfg.pos_encoding, model.cfg.norm, model.cfg.activation) == ("learned", "layernorm", "gelu")
    logits = np.asarray(model(jnp.asarray(IDS)))
    assert logits.shape == (1, 12, VOCAB)  # padded ids are never scored or sampled
    np.testing.assert_allclose(logits[0], numpy_gpt2(gpt2_weights(), IDS[0]), atol=2e-5, rtol=1e-5)


def test_import_then_export_is_bit_exact(gpt2_dir, tmp_path):
    model, tokenizer = gpt2.load_gpt2(str(gpt2_dir))
    out = tmp_path / "out"
    gpt2.export_gpt2(model, tokenizer, str(out))
    assert sorted(os.listdir(out)) == ["config.json", "merges.txt", "model.safetensors", "tokenizer.json",
                                       "tokenizer_config.json", "vocab.json"]
    original, exported = load_file(str(gpt2_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert sorted(exported) == sorted(original)
    for name, value in original.items():
        assert exported[name].dtype == value.dtype and exported[name].shape == value.shape, name
        assert exported[name].tobytes() == value.tobytes(), name
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"] and config["eos_token_id"] == VOCAB - 1
    assert {k: config[k] for k in hf_config()} == hf_config()
    again, _ = gpt2.load_gpt2(str(out))
    for a, b in zip(nnx.to_flat_state(nnx.state(model, nnx.Param)), nnx.to_flat_state(nnx.state(again, nnx.Param))):
        assert a[0] == b[0] and np.asarray(a[1][...]).tobytes() == np.asarray(b[1][...]).tobytes()


def test_sharded_weights_with_prefix_and_mask_buffers_load(gpt2_dir, tmp_path):
    d = tmp_path / "sharded"
    d.mkdir()
    for name in ("config.json", "vocab.json", "merges.txt"):
        (d / name).write_bytes((gpt2_dir / name).read_bytes())
    w = {f"transformer.{k}": v for k, v in gpt2_weights().items()}
    w["transformer.h.0.attn.bias"] = np.tril(np.ones((1, 1, POSITIONS, POSITIONS), np.float32))
    names = sorted(w)
    shards = {"model-00001-of-00002.safetensors": names[:10], "model-00002-of-00002.safetensors": names[10:]}
    for file, keys in shards.items():
        save_file({k: w[k] for k in keys}, str(d / file))
    index = {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    single, _ = gpt2.load_gpt2(str(gpt2_dir))
    sharded, _ = gpt2.load_gpt2(str(d))
    np.testing.assert_array_equal(single(jnp.asarray(IDS)), sharded(jnp.asarray(IDS)))
    assert gpt2.weights_digest(str(d)) != gpt2.weights_digest(str(gpt2_dir))


def test_the_gpt2_tokenizer_reads_vocab_and_merges_or_tokenizer_json(gpt2_dir, tmp_path):
    model, tokenizer = gpt2.load_gpt2(str(gpt2_dir))
    text = "the hat, then <|endoftext|> the end"
    ids = tokenizer.encode(text)
    assert 258 in ids.tolist() and 256 in ids.tolist()  # " the" and "he" merged
    assert 259 not in ids.tolist()  # text spelling a special token stays text
    assert tokenizer.decode(ids) == text and tokenizer.special_ids == {"<|endoftext|>": 259}
    assert tokenizer.token_bytes(258) == b" the" and tokenizer.vocab_size == VOCAB
    out = tmp_path / "out"
    gpt2.export_gpt2(model, tokenizer, str(out))
    (out / "vocab.json").unlink()
    assert load_tokenizer(str(out)).encode(text).tolist() == ids.tolist()
    from gptjax.data.tokenizers import HFBPETokenizer
    assert HFBPETokenizer.from_directory(str(out)).encode(text).tolist() == ids.tolist()


def test_block_size_may_be_lowered_but_not_raised(gpt2_dir):
    model, _ = gpt2.load_gpt2(str(gpt2_dir), block_size=8, dtype=jnp.bfloat16)
    assert model.wpe.embedding.shape == (8, EMBD) and model.cfg.dtype == jnp.bfloat16
    with pytest.raises(UserError, match="block_size=16 is more than the 12 positions"):
        gpt2.load_gpt2(str(gpt2_dir), block_size=16)


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_a_pickle_only_directory_is_refused_with_how_to_convert(tmp_path):
    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(hf_config()))
    (d / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(UserError) as e:
        gpt2.load_gpt2(str(d))
    assert "never unpickles" in one_line(e) and "safe_serialization=True" in one_line(e)


@pytest.mark.parametrize("damage, expected", [
    ("config.json", "config.json is missing"),
    ("model.safetensors", "has no model.safetensors"),
    ("h.1.mlp.c_fc.bias", "lacks h.1.mlp.c_fc.bias"),
    ("merges.txt", "no tokenizer in"),
])
def test_a_missing_file_or_tensor_is_one_clear_line(gpt2_dir, damage, expected):
    if damage.startswith("h."):
        w = gpt2_weights()
        del w[damage]
        save_file(w, str(gpt2_dir / "model.safetensors"))
    else:
        (gpt2_dir / damage).unlink()
    with pytest.raises(UserError) as e:
        gpt2.load_gpt2(str(gpt2_dir))
    assert expected in one_line(e)


def test_bfloat16_weights_load_as_float32(gpt2_dir):
    import ml_dtypes

    w = {k: v.astype(ml_dtypes.bfloat16) for k, v in gpt2_weights().items()}
    save_file(w, str(gpt2_dir / "model.safetensors"))
    model, _ = gpt2.load_gpt2(str(gpt2_dir))
    assert model.wte.embedding.dtype == jnp.float32
    np.testing.assert_array_equal(model.h[1].mlp.c_fc.kernel[...], w["h.1.mlp.c_fc.weight"].astype(np.float32))


def test_a_config_gptjax_cannot_run_is_refused(gpt2_dir):
    (gpt2_dir / "config.json").write_text(json.dumps({**hf_config(), "activation_function": "relu"}))
    with pytest.raises(UserError, match="activation_function='relu'"):
        gpt2.load_gpt2(str(gpt2_dir))


def test_an_incompatible_export_is_refused_naming_the_switches_and_writes_nothing(tmp_path):
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, pos_encoding="rope",
                    norm="rmsnorm", activation="relu2", bias=False, tie_embeddings=False)
    out = tmp_path / "out"
    with pytest.raises(UserError) as e:
        gpt2.export_gpt2(GPT(cfg, rngs=nnx.Rngs(0)), CharTokenizer("abcdefghij"), str(out))
    message = one_line(e)
    for switch in ("model.norm='rmsnorm'", "model.activation='relu2'", "model.pos_encoding='rope'",
                   "model.bias=False", "model.tie_embeddings=False", "data.tokenizer='char'"):
        assert switch in message
    assert not out.exists() and os.listdir(tmp_path) == []


def test_export_never_writes_into_a_directory_that_holds_files(gpt2_dir):
    model, tokenizer = gpt2.load_gpt2(str(gpt2_dir))
    before = sorted(os.listdir(gpt2_dir))
    with pytest.raises(UserError, match="not an empty directory"):
        gpt2.export_gpt2(model, tokenizer, str(gpt2_dir))
    assert sorted(os.listdir(gpt2_dir)) == before


def test_model_settings_name_the_architecture_for_config_model(gpt2_dir):
    model, _ = gpt2.load_gpt2(str(gpt2_dir))
    settings = gpt2.model_settings(model.cfg)
    assert settings == {"kind": "gpt", "block_size": POSITIONS, "n_layer": LAYERS, "n_head": HEADS, "n_embd": EMBD,
                        "mlp_ratio": 4, "norm": "layernorm", "norm_eps": 1e-5, "activation": "gelu",
                        "pos_encoding": "learned", "qk_norm": False, "bias": True, "tie_embeddings": True,
                        "vocab_pad": 64}


def test_an_imported_gpt2_decodes_with_the_cache_as_it_computes_without(gpt2_dir):
    from gptjax.generate.generator import Generator
    from gptjax.generate.settings import GenerationSettings

    model, tokenizer = gpt2.load_gpt2(str(gpt2_dir))
    prompt = IDS[0, :4]
    greedy = Generator(model, tokenizer).generate([prompt], GenerationSettings(strategy="greedy", max_new_tokens=6))
    ids = list(prompt)
    for _ in range(6):
        ids.append(int(np.argmax(model(jnp.asarray([ids]))[0, -1])))
    np.testing.assert_array_equal(greedy[0][0].tokens, ids[4:])
    sampled = Generator(model, tokenizer).generate([prompt], GenerationSettings(max_new_tokens=8, num_samples=4))
    assert all(0 <= t < VOCAB for c in sampled[0] for t in c.tokens)
