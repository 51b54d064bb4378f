import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.base import get_config
from gptjax.data.pairs import pad_pairs
from gptjax.model import build_model
from gptjax.model.encdec import EncDecConfig, EncoderDecoder, decode_step, encdec_loss, generate_encdec
from gptjax.model.gpt import KVCache

V = 23


def model_of(**kw) -> EncoderDecoder:
    cfg = EncDecConfig(vocab_size=V, block_size=16, n_layer=2, n_encoder_layer=2, n_head=4, n_embd=32, **kw)
    return EncoderDecoder(cfg, rngs=nnx.Rngs(0))


def ids(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).integers(1, V, size=shape), jnp.int32)


@pytest.fixture(scope="module")
def model():
    return model_of()


# One source and target shape throughout (B 2, S 6, T 7): eager ops compile once per shape.
def test_shapes(model):
    src, tgt = ids((2, 6), 0), ids((2, 7), 1)
    assert model.encode(src).shape == (2, 6, 32)
    assert model(src, tgt).shape == (2, 7, V)
    assert model(src, tgt).dtype == jnp.float32


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_decoder_is_causal(pos):
    m = model_of(pos_encoding=pos)
    src, tgt = ids((2, 6), 0), ids((2, 7), 1)
    before = m(src, tgt)
    changed = tgt.at[:, 4].set((tgt[:, 4] + 1) % V)
    after = m(src, changed)
    np.testing.assert_allclose(after[:, :4], before[:, :4], atol=1e-6)
    assert not np.allclose(after[:, 4:], before[:, 4:], atol=1e-4)


def test_encoder_is_bidirectional(model):
    src = ids((2, 6), 0)
    changed = src.at[:, -1].set((src[:, -1] + 1) % V)
    assert not np.allclose(model.encode(src)[:, 0], model.encode(changed)[:, 0], atol=1e-4)
    # ... and so every target position sees the whole source.
    tgt = ids((2, 7), 1)
    assert not np.allclose(model(src, tgt)[:, 0], model(changed, tgt)[:, 0], atol=1e-4)


def test_padding_changes_no_real_logit(model):
    src, tgt = ids((2, 6), 0), ids((2, 7), 1)
    plain = model(src, tgt)
    padded_src = jnp.concatenate([src, ids((2, 3), 2)], axis=1)  # padding of arbitrary ids
    src_mask = jnp.broadcast_to(jnp.arange(9)[None, :] < 6, (2, 9))
    padded_tgt = jnp.concatenate([tgt, ids((2, 2), 3)], axis=1)
    tgt_mask = jnp.broadcast_to(jnp.arange(9)[None, :] < 7, (2, 9))
    out = model(padded_src, padded_tgt, src_mask=src_mask, tgt_mask=tgt_mask)
    np.testing.assert_allclose(out[:, :7], plain, atol=1e-5)
    # Without the mask the padding is read: the mask is what keeps it out.
    assert not np.allclose(model(padded_src, padded_tgt)[:, :7], plain, atol=1e-4)


def test_rows_padded_differently_match_their_unpadded_logits(model):
    pairs = [(np.arange(3, 9), np.arange(9, 16)), (np.array([11, 12, 13]), np.array([13, 14, 15, 16]))]
    batch = pad_pairs(pairs, 6, 7, bos_id=1)
    logits = model(jnp.asarray(batch.src), jnp.asarray(batch.tgt_in), src_mask=jnp.asarray(batch.src_mask),
                   tgt_mask=jnp.asarray(batch.tgt_weights > 0))
    for r, (s, t) in enumerate(pairs):
        alone = model(jnp.asarray(s)[None], jnp.asarray(np.concatenate([[1], t[:-1]]))[None])
        np.testing.assert_allclose(logits[r, :len(t)], alone[0], atol=1e-5)


def test_cached_decoding_equals_full_recomputation(model):
    src, tgt = ids((2, 6), 0), ids((2, 7), 1)
    src_mask = jnp.array([[True] * 6, [True] * 4 + [False] * 2])
    full = model(src, tgt, src_mask=src_mask)
    cross = model.cross_kv(model.encode(src, src_mask))
    cache = KVCache.zeros(model.cfg, 2, 7)
    chunks = []
    for lo, hi in ((0, 3), (3, 4), (4, 5), (5, 7)):  # a prompt chunk, then single tokens, then a pair
        logits, cache = decode_step(model, tgt[:, lo:hi], cross, src_mask, cache)
        chunks.append(logits)
    np.testing.assert_allclose(jnp.concatenate(chunks, axis=1), full, atol=1e-5)
    assert int(cache.index) == 7


def test_generation_equals_greedy_recomputation(model):
    src = ids((2, 6), 4)
    got = generate_encdec(model, src, None, bos_id=1, max_new_tokens=7)
    assert got.shape == (2, 7)
    # Greedy: each token is the argmax of the full, uncached pass over the tokens before it.
    full = model(src, jnp.concatenate([jnp.ones((2, 1), jnp.int32), got[:, :-1]], axis=1))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(jnp.argmax(full, axis=-1)))
    sampled = [np.asarray(generate_encdec(model, src, None, bos_id=1, max_new_tokens=7, temperature=1.0, seed=s))
               for s in (0, 0)]
    np.testing.assert_array_equal(sampled[0], sampled[1])


def test_loss_is_the_mean_over_real_target_tokens(model):
    pairs = [(np.array([3, 4, 5]), np.array([8, 9])), (np.array([11, 12]), np.array([13, 14, 15]))]
    batch = jax.tree.map(jnp.asarray, pad_pairs(pairs, 6, 7, bos_id=1))
    loss, count = encdec_loss(model, batch)
    assert float(count) == 5
    logits = model(batch.src, batch.tgt_in, src_mask=batch.src_mask)
    logp = jax.nn.log_softmax(logits)
    want = -sum(float(logp[r, i, batch.tgt_out[r, i]]) for r, n in ((0, 2), (1, 3)) for i in range(n)) / 5
    assert float(loss) == pytest.approx(want, rel=1e-5)


def test_build_model_makes_encdec_from_the_config():
    c = get_config("smoke").model
    c.kind = "encdec"
    c.n_encoder_layer = 3
    m = build_model(c, V, nnx.Rngs(0))
    assert isinstance(m, EncoderDecoder) and len(m.encoder) == 3 and len(m.decoder) == c.n_layer
