"""Model FLOPs, device peaks, the profiler trace and the GPT-2 configs' shapes."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import pytest

from configs.gpt2_124m import get_config as gpt2_124m
from configs.gpt2_350m import get_config as gpt2_350m
from gptjax.train import mfu, profiling
from gptjax.train import state as state_lib


@pytest.mark.parametrize("get_config, params", [(gpt2_124m, 124_475_904), (gpt2_350m, 354_871_296)])
def test_gpt2_configs_have_gpt2_shapes(get_config, params):
    c = get_config()
    assert (c.data.vocab_size, c.model.block_size, c.model.dtype, c.model.param_dtype) == (
        50304, 1024, "bfloat16", "float32")
    assert c.data.vocab_size % 128 == 0
    _, abstract, _ = state_lib.abstract_model(c.model, c.data.vocab_size, 0)
    assert state_lib.count_params(abstract) == params
    assert c.train.batch_size * c.model.block_size == 524_288


def test_flops_per_token_is_palm_count():
    """6 per matmul weight (the tied embedding counts once, as the head; positions are a
    lookup) plus 12 x layers x width x context for attention."""
    c = gpt2_124m()
    positions = c.model.block_size * c.model.n_embd
    expected = 6 * (124_475_904 - positions) + 12 * 12 * 768 * 1024
    assert mfu.flops_per_token(c.model, 50304) == expected
    c.model.tie_embeddings = False  # the head's matmul is the same size; the embedding is a lookup
    assert mfu.flops_per_token(c.model, 50304) == expected


@pytest.mark.parametrize("kind, peak", [
    ("TPU v4", 275e12), ("TPU v5 lite", 197e12), ("TPU v5", 459e12), ("TPU v5p", 459e12),
    ("TPU v6 lite", 918e12), ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA H100 80GB HBM3", 989e12),
    ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12), ("cpu", None),
])
def test_known_chips_have_their_bf16_peak(kind, peak):
    assert mfu.table_peak(kind) == peak


def test_peak_is_configured_or_measured():
    assert mfu.device_peak(3e12) == 3e12
    if jax.local_devices()[0].platform == "cpu":
        assert 1e8 < mfu.device_peak() < 1e14


def test_utilisation_of_the_whole_mesh():
    fields = mfu.utilisation(tokens_per_sec=1000.0, per_token=6e6, peak_per_device=1e9, n_devices=4)
    assert fields == {"model_flops_per_sec": 6e9, "mfu": 1.5}
    assert mfu.utilisation(1000.0, 6e6, 0.0, 4)["mfu"] is None


def test_trace_covers_the_requested_steps(tmp_path):
    step = jax.jit(lambda x: jnp.tanh(x @ x))
    x = jnp.ones((64, 64))
    trace = profiling.StepTrace(str(tmp_path / "profile"), steps=2)
    for first in range(4):
        trace.before(first)
        x = step(x)
        trace.after(first + 1, x)
        assert trace.active == (first == 0)
    trace.stop(x)
    written = [f for _, _, files in os.walk(tmp_path / "profile") for f in files]
    assert any(f.endswith(".xplane.pb") for f in written)


def test_no_trace_unless_asked(tmp_path):
    trace = profiling.StepTrace(str(tmp_path / "profile"), steps=0)
    trace.before(0)
    trace.after(5, None)
    trace.stop()
    assert not os.path.exists(tmp_path / "profile")
