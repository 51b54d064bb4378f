import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax.data.augment import AUGMENTATIONS, augment, char_swap, span_mask, token_noise

V = 50
BATCH = jnp.asarray(np.random.default_rng(0).integers(1, V, size=(2, 64, 129)), jnp.int32)
KW = dict(rate=0.15, vocab_size=V, span=3, mask_id=0)


@pytest.mark.parametrize("kind", AUGMENTATIONS)
def test_targets_untouched_and_a_pure_function_of_seed_and_step(kind):
    out = augment(BATCH, 7, 3, kind, **KW)
    np.testing.assert_array_equal(out.targets, BATCH[..., 1:])
    assert out.inputs.shape == out.targets.shape and out.inputs.dtype == BATCH.dtype
    np.testing.assert_array_equal(augment(BATCH, 7, 3, kind, **KW).inputs, out.inputs)
    # the step may be traced inside a compiled train step: same values
    jitted = jax.jit(lambda b, s: augment(b, 7, s, kind, **KW).inputs)(BATCH, jnp.int32(3))
    np.testing.assert_array_equal(jitted, out.inputs)
    if kind != "none":
        assert not np.array_equal(augment(BATCH, 7, 4, kind, **KW).inputs, out.inputs)
        assert not np.array_equal(augment(BATCH, 8, 3, kind, **KW).inputs, out.inputs)


def test_token_noise_replaces_about_rate_of_inputs():
    inputs = BATCH[..., :-1]
    changed = np.mean(np.asarray(token_noise(BATCH, 0, 0, rate=0.2, vocab_size=V).inputs != inputs))
    assert 0.17 < changed < 0.21  # a replacement hits the same id 1 time in V
    np.testing.assert_array_equal(token_noise(BATCH, 0, 0, rate=0.0, vocab_size=V).inputs, inputs)


def test_span_mask_masks_whole_spans():
    out = np.asarray(span_mask(BATCH, 1, 0, rate=0.2, span=4, mask_id=0).inputs)
    inputs = np.asarray(BATCH[..., :-1])
    masked = out == 0
    assert 0.12 < masked.mean() < 0.22
    np.testing.assert_array_equal(out[~masked], inputs[~masked])
    for row in masked.reshape(-1, masked.shape[-1]):
        runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], row.astype(int), [0]]))))[::2]
        ends_at_edge = row[-1]
        assert (runs[:-1] >= 4).all() and (ends_at_edge or not len(runs) or runs[-1] >= 4)


def test_char_swap_transposes_adjacent_pairs_only():
    inputs = np.asarray(BATCH[..., :-1]).reshape(-1, 128)
    out = np.asarray(char_swap(BATCH, 2, 0, rate=0.1).inputs).reshape(-1, 128)
    np.testing.assert_array_equal(np.sort(out, axis=-1), np.sort(inputs, axis=-1))
    swaps = 0
    for a, b in zip(inputs, out):
        i = 0
        while i < len(a):
            if a[i] != b[i]:
                assert b[i] == a[i + 1] and b[i + 1] == a[i]
                swaps, i = swaps + 1, i + 2
            else:
                i += 1
    assert 0.05 < swaps / inputs.size < 0.12


def test_unknown_augmentation_is_refused():
    with pytest.raises(ValueError, match="data.augment"):
        augment(BATCH, 0, 0, "mixup", **KW)
