"""Sharded training computes what one device computes, on every mesh layout.

The 8-device checks run in subprocesses with forced CPU devices (tests/mesh_worker.py and
`python -m gptjax.main`), so this pytest process keeps whatever devices it started with.
The rest are in-process: mesh arithmetic, the logical-axis rules on an abstract mesh,
mixed precision and remat.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AbstractMesh, PartitionSpec as P

import mesh_worker
from configs.base import get_config
from gptjax.errors import UserError
from gptjax.model import build_model
from gptjax.train import mesh as mesh_lib
from gptjax.train import state as state_lib
from gptjax.eval.scoring import forward, token_nll

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-5


def forced_devices_env(count: int) -> dict[str, str]:
    """This environment with `count` CPU devices, for a fresh Python process."""
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", os.environ.get("XLA_FLAGS", ""))
    return dict(os.environ, XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={count}".strip(),
                JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))


@pytest.fixture(scope="module")
def eight(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("mesh_worker")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "mesh_worker.py"), str(out)], cwd=ROOT,
                          env=forced_devices_env(8), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 8 and result["vocab"] == 48
    return result


# ----------------------------------------------------------------------------- 8 devices


@pytest.mark.parametrize("layout", ["dp=8", "fsdp=8", "dp=2 fsdp=2 tp=2"])
def test_every_layout_trains_like_one_device(eight, layout):
    np.testing.assert_allclose(eight["losses"][layout], eight["losses"]["1 device"], rtol=0, atol=TOLERANCE)
    assert eight["param_difference"][layout] < TOLERANCE


def test_state_is_initialised_directly_sharded_with_the_same_numbers(eight):
    assert eight["param_difference"]["fsdp+tp initialised"] == 0.0


def test_parameters_and_optimizer_moments_follow_the_rules(eight):
    tp = eight["placements"]["fsdp+tp"]  # fsdp=4 x tensor=2
    expected = {
        "h/0/attn/c_attn/kernel": ["P('fsdp', 'tensor')", [8, 48]],   # (embed, heads) of (32, 96)
        "h/0/attn/c_attn/bias": ["P('tensor',)", [48]],
        "h/0/attn/c_proj/kernel": ["P('tensor', 'fsdp')", [16, 8]],   # (heads, embed)
        "h/1/mlp/c_fc/kernel": ["P('fsdp', 'tensor')", [8, 64]],      # (embed, mlp) of (32, 128)
        "h/1/mlp/c_proj/kernel": ["P('tensor', 'fsdp')", [64, 8]],
        "ln_f/norm/scale": ["P('fsdp',)", [8]],
        "wte/embedding": ["P('tensor', 'fsdp')", [24, 8]],            # (vocab, embed) of (48, 32)
        "wpe/embedding": ["P(None, 'fsdp')", [32, 8]],                # (length, embed)
    }
    for name, placement in expected.items():
        assert tp[f"params/{name}/value"] == placement, name
        for moment in ("mu", "nu"):
            assert tp[f"opt_state/1/0/{moment}/{name}/value"] == placement, (moment, name)
    assert tp["step"] == ["P()", []]
    assert all("fsdp" not in spec and "tensor" not in spec for spec, _ in eight["placements"]["dp=8"].values())
    assert eight["placements"]["fsdp=8"]["params/h/0/attn/c_attn/kernel/value"] == ["P('fsdp', None)", [4, 96]]


def test_checkpoint_saved_on_fsdp_continues_on_dp_by_tp(eight):
    assert eight["restored_step"] == mesh_worker.STEPS
    restored = eight["placements"]["restored on dp=2 tp=4"]
    assert restored["params/h/0/attn/c_attn/kernel/value"] == ["P(None, 'tensor')", [32, 24]]
    assert restored["params/wte/embedding/value"] == ["P('tensor', None)", [12, 32]]
    np.testing.assert_allclose(eight["losses"]["restored on dp=2 tp=4"], eight["losses"]["fsdp=8 continued"],
                               rtol=0, atol=TOLERANCE)


def test_gradient_accumulation_matches_one_batch_under_fsdp(eight):
    np.testing.assert_allclose(eight["losses"]["fsdp=8 accum=2"], eight["losses"]["fsdp=8"], rtol=0, atol=TOLERANCE)


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("mesh_errors")
    mesh_worker.write_corpus(str(d / "corpus.txt"))
    return d


ERRORS = {
    "mesh": (["--config.mesh.fsdp=3"], r"mesh .* does not divide 8 devices"),
    "batch": (["--config.mesh.data=8", "--config.train.batch_size=12"],
              r"micro-batch 12 .* not divisible by the 8 data-parallel replicas"),
    "tensor": (["--config.mesh.data=1", "--config.mesh.tensor=8", "--config.model.n_embd=20",
                "--config.model.n_head=2"], r"dimension heads=60 is not divisible by mesh axis tensor of size 8"),
}


def test_bad_layouts_fail_in_one_line_before_compiling(corpus_files):
    """Started together: each is mostly Python start-up, and they finish in the time of one."""
    base = [sys.executable, "-m", "gptjax.main", "--config", "configs/base.py:smoke",
            "--config.data.source=files", f"--config.data.path={corpus_files / 'corpus.txt'}",
            f"--config.data.cache_dir={corpus_files / 'cache'}"]
    procs = {name: subprocess.Popen(base + [f"--workdir={corpus_files / name}"] + flags, cwd=ROOT,
                                    env=forced_devices_env(8), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
             for name, (flags, _) in ERRORS.items()}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, (name, err[-2000:])
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and re.search(ERRORS[name][1], lines[0]), (name, err[-2000:])
        assert "Traceback" not in err and "compiled train step" not in out, name
        assert not os.path.exists(corpus_files / name / "checkpoints"), name


# ----------------------------------------------------------------------------- in-process


@pytest.mark.parametrize("preset, shape", [("dp", (8, 1, 1)), ("fsdp", (1, 8, 1)), ("fsdp+tp", (1, 4, 2))])
def test_presets_fill_every_device(preset, shape):
    assert mesh_lib.mesh_shape(dict(data=1, fsdp=1, tensor=1, preset=preset), 8) == shape


def test_minus_one_takes_the_rest_and_wrong_sizes_are_refused():
    assert mesh_lib.mesh_shape(dict(data=2, fsdp=-1, tensor=2), 16) == (2, 4, 2)
    with pytest.raises(UserError, match="does not divide 8 devices"):
        mesh_lib.mesh_shape(dict(data=3, fsdp=-1, tensor=1), 8)
    with pytest.raises(UserError, match="= 4 devices, but there are 8"):
        mesh_lib.mesh_shape(dict(data=2, fsdp=2, tensor=1), 8)
    with pytest.raises(UserError, match="unknown"):
        mesh_lib.mesh_shape(dict(data=1, fsdp=1, tensor=1, preset="zero3"), 8)


def test_rules_map_logical_axes_onto_a_mesh_without_devices():
    mesh = AbstractMesh((2, 2, 2), mesh_lib.AXES)
    assert mesh_lib.spec_for(("batch", "length"), (8, 16), mesh) == P(("data", "fsdp"), None)
    assert mesh_lib.spec_for(("embed", "mlp"), (32, 128), mesh) == P("fsdp", "tensor")
    assert mesh_lib.spec_for(("vocab", "embed"), (48, 32), AbstractMesh((8, 1, 1), mesh_lib.AXES)) == P(None, None)
    with pytest.raises(UserError, match="wte dimension vocab=65 is not divisible by mesh axis tensor of size 2"):
        mesh_lib.spec_for(("vocab", "embed"), (65, 32), mesh, "wte")


def smoke_model(**changes):
    c = get_config("smoke")
    c.model.update(changes)
    return c.model


def initial_arrays(**changes):
    """(params, rest) of the smoke GPT, initialised in one compiled call."""
    model = smoke_model(**changes)
    return jax.jit(lambda: nnx.split(build_model(model, 48, nnx.Rngs(0)), nnx.Param, ...)[1:])()


def dot_input_dtypes(jaxpr) -> set:
    """Operand dtypes of every matrix product in a jaxpr and the jaxprs nested in it."""
    found = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.add(tuple(str(v.aval.dtype) for v in eqn.invars))
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found |= dot_input_dtypes(inner)
    return found


def test_bfloat16_compute_keeps_float32_weights_logits_and_loss():
    idx = jax.random.randint(jax.random.key(1), (2, 17), 0, 48)
    params, rest = initial_arrays(dtype="bfloat16", param_dtype="float32")
    assert {str(x.dtype) for x in jax.tree.leaves(params)} == {"float32"}
    losses = {}
    for dtype in ("float32", "bfloat16"):
        graphdef, _, _ = state_lib.abstract_model(smoke_model(dtype=dtype), 48, 0)

        def loss(p):
            logits, _ = forward(graphdef, p, rest, idx[:, :-1], train=False)
            return logits, token_nll(logits, idx[:, 1:]).mean()

        closed = jax.make_jaxpr(loss)(params)
        logits, value = jax.jit(loss)(params)
        assert logits.dtype == jnp.float32 and value.dtype == jnp.float32
        assert dot_input_dtypes(closed.jaxpr) == {(dtype, dtype)}
        losses[dtype] = float(value)
    assert losses["bfloat16"] == pytest.approx(losses["float32"], abs=0.05)


def test_remat_changes_memory_not_numbers():
    idx = jax.random.randint(jax.random.key(2), (2, 17), 0, 48)
    params, rest = initial_arrays()
    out = {}
    for remat in (False, True):
        graphdef, _, _ = state_lib.abstract_model(smoke_model(remat=remat), 48, 0)

        def loss(p):
            logits, _ = forward(graphdef, p, rest, idx[:, :-1], train=True, rngs=nnx.Rngs(dropout=0))
            return token_nll(logits, idx[:, 1:]).mean()

        out[remat] = jax.jit(jax.value_and_grad(loss))(params)
    assert float(out[True][0]) == pytest.approx(float(out[False][0]), abs=1e-6)
    for a, b in zip(jax.tree.leaves(out[True][1]), jax.tree.leaves(out[False][1])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
