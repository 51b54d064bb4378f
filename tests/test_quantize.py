"""Weight-only int8: error bounds, int8 bytes, and generation through the existing decoder."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gptjax.data.tokenizers import CharTokenizer
from gptjax.errors import UserError
from gptjax.generate.generator import Generator
from gptjax.generate.settings import GenerationSettings
from gptjax.model import cpu_matmul, lora
from gptjax.model.gpt import GPT, GPTConfig
from gptjax.model.quantize import Int8Embed, Int8Linear, Int8Weight, quantize, quantize_channels, quantize_int8

CFG = GPTConfig(vocab_size=48, block_size=32, n_layer=2, n_head=4, n_embd=64)


def model(**changes) -> GPT:
    return GPT(GPTConfig(**{**CFG.__dict__, **changes}), rngs=nnx.Rngs(0))


def tokens(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, CFG.vocab_size, shape), jnp.int32)


def test_channels_round_trip_within_half_a_step():
    w = jax.random.normal(jax.random.key(0), (64, 24)).at[:, 3].set(0.0)
    q, scale = quantize_channels(w, axis=1)
    assert q.dtype == jnp.int8 and scale.shape == (24,) and int(jnp.abs(q).max()) == 127
    err = jnp.abs(q.astype(jnp.float32) * scale - w)
    assert bool(jnp.all(err <= scale / 2 + 1e-7))
    assert float(scale[3]) == 1.0 and not bool(jnp.any(q[:, 3]))


def test_linear_error_is_within_its_rounding_bound():
    """|x (W - Wq)|_j <= sum_i |x_i| * scale_j / 2: each weight is off by at most half a step."""
    m = model()
    linear = m.h[0].mlp.c_fc
    x = jax.random.normal(jax.random.key(1), (3, 5, CFG.n_embd))
    exact, approx = linear(x), Int8Linear(linear)(x)
    bound = jnp.abs(x).sum(-1, keepdims=True) * Int8Linear(linear).scale.get_value() / 2
    assert bool(jnp.all(jnp.abs(approx - exact) <= bound + 1e-6))
    assert float(jnp.abs(approx - exact).max()) > 0  # it is quantised


def test_int8_logits_close_to_float32():
    """Per-weight rounding error is uniform within half a step: RMS step / sqrt(12) = max|w| / 440,
    about 0.7% of a weight's RMS for Gaussian channels of 64-256 weights (max ~ 3 RMS). A product
    inherits that relative error, and the ~2 n_layer + 1 quantised matmuls add theirs in
    quadrature (the residual stream dilutes them): about 1% relative RMS error on the logits is
    expected (0.8% here), 3% would be a bug."""
    for tied in (True, False):
        f32 = model(tie_embeddings=tied)
        q8 = quantize_int8(f32)
        idx = tokens((4, CFG.block_size))
        a, b = np.asarray(f32(idx)), np.asarray(q8(idx))
        rel = np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean((a - a.mean()) ** 2))
        assert 0 < rel < 0.03, rel
        assert np.mean(a.argmax(-1) == b.argmax(-1)) > 0.9


def test_kernels_take_a_quarter_of_the_bytes():
    f32 = model()
    q8 = quantize_int8(f32)
    assert type(q8.h[0].attn.c_attn) is Int8Linear and type(q8.wte) is Int8Embed
    assert type(f32.h[0].attn.c_attn) is nnx.Linear  # the float model is left as it was
    float_kernels = [x for p, x in nnx.to_flat_state(nnx.state(f32, nnx.Param))
                     if p[-1] in ("kernel", "embedding") and p[0] != "wpe"]
    int8 = jax.tree.leaves(nnx.state(q8, Int8Weight))
    float_bytes = sum(v.get_value().nbytes for v in float_kernels)
    int8_bytes = sum(x.nbytes for x in int8)
    weights = sum(v.get_value().size for v in float_kernels)
    scales = sum(x.size for x in int8 if x.dtype == jnp.float32)
    assert int8_bytes == weights + 4 * scales
    assert 0.25 < int8_bytes / float_bytes < 0.27  # int8 plus one float32 scale per channel of >= 64 weights


def test_generation_runs_on_the_quantised_model():
    tok = CharTokenizer("abcdefgh ijklmnop\nqrstuvwxyz")
    f32 = model(vocab_size=tok.vocab_size)
    gen8 = Generator(quantize_int8(f32), tok, batch_size=2)
    s = GenerationSettings(strategy="greedy", max_new_tokens=12)
    out8 = gen8.generate_text(["abc", "hello"], s)
    assert [len(c[0].tokens) for c in out8] == [12, 12]
    streamed = "".join(gen8.stream(gen8.encode("abc"), s))
    assert streamed == out8[0][0].text
    beams = gen8.generate_text(["abc"], GenerationSettings(strategy="beam", beams=2, max_new_tokens=6))
    assert len(beams[0][0].tokens) <= 6


def test_refusals():
    with pytest.raises(UserError, match="unknown"):
        quantize(model(), "int4")
    assert quantize(model(), "none").h[0].attn.c_attn.__class__ is nnx.Linear
    adapted = lora.apply_lora(model(), lora.LoRASettings.create(2, 4.0, "attn"), nnx.Rngs(0))
    with pytest.raises(UserError, match="merge LoRA"):
        quantize_int8(adapted)
    assert type(quantize_int8(lora.merge_adapters(adapted)).h[0].attn.c_attn) is Int8Linear


def test_the_cpu_kernels_build_here_and_the_int8_products_match_the_xla_ones():
    """CI installs g++, so the kernels must build; the int8 products equal XLA's widened ones for few
    rows (1, 3, 8: the paths for one row and for several), widths that are not multiples of the
    kernel's blocks, and leading batch axes, inside a compiled loop too."""
    assert cpu_matmul.unavailable() == ""
    rng = np.random.default_rng(0)
    for rows, k, n in ((1, 64, 48), (3, 70, 300), (8, 259, 5), (1, 514, 1030), (5, 514, 1030)):  # the last two
        # are over the size from which the kernel shares a product among XLA's threads
        x = jnp.asarray(rng.standard_normal((rows, k)), jnp.float32).reshape(1, rows, k)
        q = jnp.asarray(rng.integers(-127, 128, (k, n)), jnp.int8)
        scale = jnp.asarray(rng.random(n), jnp.float32)
        assert cpu_matmul.applies(x)
        want = (np.asarray(x, np.float64) @ np.asarray(q, np.float64)) * np.asarray(scale)
        got = jax.jit(lambda x: jax.lax.fori_loop(0, 2, lambda i, y: cpu_matmul.int8_columns(x, q, scale) + 0 * y,
                                                 jnp.zeros((1, rows, n))))(x)
        tolerance = 1e-6 * np.abs(want).max() * np.sqrt(k)  # float32 sums of k terms, against float64
        np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=tolerance)
        table = jnp.asarray(np.asarray(q).T.copy())  # (vocab, features), as an embedding
        np.testing.assert_allclose(np.asarray(jax.jit(cpu_matmul.int8_rows)(x, table, scale)), want, rtol=0,
                                   atol=tolerance)


def test_the_float32_product_matches_float64_and_has_xla_gradients():
    """Few rows by a kernel large enough for it (shared among threads), widths off the kernel's
    blocks, inside a compiled loop; its gradient is XLA's (a small batch may train through it)."""
    rng = np.random.default_rng(1)
    for rows, k, n in ((1, 512, 1030), (3, 1027, 515), (8, 770, 2304)):
        x = jnp.asarray(rng.standard_normal((rows, k)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((k, n)), jnp.float32)
        assert cpu_matmul.applies_float(x, w)
        want = np.asarray(x, np.float64) @ np.asarray(w, np.float64)
        got = jax.jit(lambda x: jax.lax.fori_loop(0, 2, lambda i, y: cpu_matmul.float_columns(x, w) + 0 * y,
                                                 jnp.zeros((rows, n))))(x)
        np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-6 * np.abs(want).max() * np.sqrt(k))
    weights = jnp.asarray(rng.standard_normal((rows, n)), jnp.float32)
    loss = lambda f: lambda x, w: (f(x, w) * weights).sum()  # noqa: E731
    kernel, xla = (jax.grad(loss(f), (0, 1))(x, w) for f in (cpu_matmul.float_columns, jnp.matmul))
    for a, b in zip(kernel, xla):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6 * np.abs(b).max() * np.sqrt(n))
    small = jnp.ones((256, 768), jnp.float32)  # sits in cache: XLA's
    assert not cpu_matmul.applies_float(x, small) and not cpu_matmul.applies_float(x, w.astype(jnp.bfloat16))
    assert not cpu_matmul.applies_float(jnp.ones((65, k), jnp.float32), w)  # a prefill: XLA's


def test_a_float_model_decodes_the_same_tokens_with_the_kernel_and_without(monkeypatch):
    tok = CharTokenizer("abcdefgh ijklmnop\nqrstuvwxyz")
    gpt = model(n_embd=512, n_head=4, n_layer=1, vocab_size=tok.vocab_size)  # c_fc 512 x 2,048: the kernel's
    assert cpu_matmul.applies_float(jnp.ones((1, 512)), gpt.h[0].mlp.c_fc.kernel.get_value())
    settings = GenerationSettings(strategy="greedy", max_new_tokens=12)
    prompts = [np.asarray(tok.encode(p), np.int32) for p in ("abc", "hello there")]
    with_kernel = [c[0].tokens.tolist() for c in Generator(gpt, tok).generate(prompts, settings)]
    monkeypatch.setattr(cpu_matmul, "MAX_ROWS", 0)
    assert with_kernel == [c[0].tokens.tolist() for c in Generator(gpt, tok).generate(prompts, settings)]


def test_int8_model_gives_the_same_logits_with_the_kernel_and_without(monkeypatch):
    q8 = quantize_int8(model())
    idx = tokens((2, 5))  # 10 rows: the kernel's
    with_kernel = np.asarray(jax.jit(lambda i: q8(i))(idx))
    monkeypatch.setattr(cpu_matmul, "MAX_ROWS", 0)  # every product through XLA
    np.testing.assert_allclose(np.asarray(jax.jit(lambda i: q8(i))(idx)), with_kernel, rtol=1e-5, atol=1e-5)
    assert not cpu_matmul.applies(jnp.ones((1, 4))) and not cpu_matmul.applies(jnp.ones((1, 4), jnp.bfloat16))


def test_products_shared_among_threads_run_side_by_side_without_waiting_on_each_other(monkeypatch):
    """A SwiGLU MLP's gate and input products do not depend on each other, so XLA may run the two
    kernels at once, each sharing its product with the pool the other keeps busy: decoding must
    still finish, with the tokens of the XLA products."""
    cfg = dict(n_embd=384, n_head=4, n_layer=1, activation="swiglu")  # 384 x 1,024 kernels: shared
    tok = CharTokenizer("abcdefgh ijklmnop\nqrstuvwxyz")
    q8 = quantize_int8(model(vocab_size=tok.vocab_size, **cfg))
    assert q8.h[0].mlp.c_gate.kernel.get_value().size >= 2**18
    settings = GenerationSettings(strategy="greedy", max_new_tokens=12)
    prompts = [np.asarray(tok.encode(p), np.int32) for p in ("abc", "hello there")]
    with_kernel = [c[0].tokens.tolist() for c in Generator(q8, tok).generate(prompts, settings)]
    monkeypatch.setattr(cpu_matmul, "MAX_ROWS", 0)
    assert with_kernel == [c[0].tokens.tolist() for c in Generator(q8, tok).generate(prompts, settings)]


def test_without_a_compiler_the_kernel_is_skipped_with_one_note(monkeypatch, tmp_path, capsys):
    cpu_matmul.unavailable.cache_clear()
    cpu_matmul.warn_once.cache_clear()
    try:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        monkeypatch.setenv("CXX", "no-such-compiler")
        assert "no C++ compiler" in cpu_matmul.unavailable()
        x = jnp.ones((2, 64), jnp.float32)
        assert not cpu_matmul.applies(x) and not cpu_matmul.applies(x)
        assert capsys.readouterr().err.count("note: decoding runs XLA's own matrix products") == 1
        cpu_matmul.unavailable.cache_clear()
        monkeypatch.setenv("CXX", "false")  # a "compiler" that fails
        assert cpu_matmul.unavailable().startswith("building cpu_matmul.cc failed")
        cpu_matmul.unavailable.cache_clear()
        monkeypatch.delenv("CXX")
        monkeypatch.setenv(cpu_matmul.SWITCH, "0")
        assert cpu_matmul.unavailable() == f"turned off by {cpu_matmul.SWITCH}=0"
        assert not list(tmp_path.rglob("*.so"))  # nothing was built, no half-written library left
    finally:
        cpu_matmul.unavailable.cache_clear()
        cpu_matmul.warn_once.cache_clear()
    monkeypatch.undo()
    assert cpu_matmul.unavailable() == ""  # the real build again (from the cache), for later tests
