"""LoRA wired through the job, the commands and the server: adapter-only training and product,
loading a base plus an adapter, switching adapters in the chat, adapters served as models, int8."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx

from gptjax.errors import UserError
from gptjax.model import lora
from gptjax.train.job import run

ROOT = Path(__file__).resolve().parents[1]


def flat(state) -> dict[str, np.ndarray]:
    return {".".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """The tiny config trained 10 steps with rank-4 adapters on attention and MLP, from a random base."""
    from conftest import tiny, write_corpus

    root = tmp_path_factory.mktemp("lora_run")
    c = tiny(root, write_corpus(root / "corpus"))
    c.train.lora_rank, c.train.lora_name = 4, "first"
    c.train.learning_rate, c.train.warmup_steps = 1e-2, 0
    summary = run(c, str(root / "w"))
    return c, str(root / "w"), summary


def test_lora_training_changes_only_the_adapters(lora_run):
    from gptjax.train import state as state_lib
    from gptjax.train.optimizer import build_optimizer
    from gptjax.workdir import load_model

    config, workdir, summary = lora_run
    model, tokenizer, _ = load_model(workdir)
    vocab, lora_settings = tokenizer.vocab_size, lora.LoRASettings.from_config(config.train)
    _, params, _ = state_lib.abstract_model(config.model, vocab, config.seed, lora_settings)
    tx = build_optimizer(config.train, params)
    start = jax.jit(lambda: state_lib.fresh_state(config.model, vocab, config.seed, tx, lora_settings))()
    initial = {k: v for k, v in flat(start.rest).items() if k in flat(nnx.state(model, nnx.Param))}
    trained_base = flat(nnx.state(model, lora.base_filter))
    assert trained_base.keys() == initial.keys()
    for key, value in initial.items():  # the base as the run initialised it, bit for bit
        np.testing.assert_array_equal(trained_base[key], value, err_msg=key)
    adapters = flat(nnx.state(model, lora.lora_filter))
    assert adapters and any(np.abs(v).max() > 0 for k, v in adapters.items() if k.endswith("lora_b"))
    # the optimizer holds moments for the adapters only
    opt = jax.eval_shape(tx.init, params)
    n_adapter = sum(v.size for v in adapters.values())
    assert summary["params"] == n_adapter
    assert sum(x.size for x in jax.tree.leaves(opt)) <= 2 * n_adapter + 8  # two moments, and counts


def test_only_the_adapter_is_the_product_and_its_size_is_reported(lora_run):
    _, workdir, summary = lora_run
    product = Path(workdir) / "adapters" / "first"
    assert sorted(p.name for p in product.iterdir()) == ["adapter.json", "adapter.safetensors"]
    tensors = safetensors.numpy.load_file(str(product / "adapter.safetensors"))
    assert tensors and all(".lora.lora_" in k for k in tensors)
    assert summary["adapter_bytes"] == (product / "adapter.safetensors").stat().st_size
    assert summary["adapter_params"] == sum(t.size for t in tensors.values())
    assert json.loads((Path(workdir) / "summary.json").read_text())["adapter_bytes"] == summary["adapter_bytes"]
    assert f"| adapter_bytes | {summary['adapter_bytes']} |" in (Path(workdir) / "report.md").read_text()


def test_a_rerun_resumes_with_the_same_adapter_settings_only(lora_run, tmp_path):
    config, workdir, _ = lora_run
    changed = config.copy_and_resolve_references()
    changed.train.lora_rank = 8
    with pytest.raises(UserError, match="train.lora_rank=4 but the config says 8"):
        run(changed, workdir)


@pytest.mark.parametrize("key, value, message", [
    ("lora_rank", -1, "train.lora_rank=-1 must be a positive integer"),
    ("lora_targets", "attn,wte", "names 'wte', which is no layer group or layer"),
    ("lora_targets", "head", "lm_head"),
    ("lora_name", "a/b", "plain folder name"),
])
def test_bad_lora_settings_are_one_clear_error(tiny_config, tmp_path, key, value, message):
    tiny_config.train.lora_rank = 4
    tiny_config.train[key] = value
    with pytest.raises(UserError, match=message):
        run(tiny_config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_a_negative_rank_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    out = subprocess.run([sys.executable, "-m", "gptjax.main", "--config", "configs/base.py:smoke",
                          "--workdir", str(tmp_path / "run"), "--config.train.lora_rank=-1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "train.lora_rank=-1" in lines[0], out.stderr


# ----------------------------------------------------------------------------- a base and its adapters


@pytest.fixture(scope="module")
def persona_workdir(chat_workdir, tmp_path_factory) -> str:
    """A copy of the shared chat model with two adapters, HAMLET and OPHELIA, in its adapters/, and
    a third, STRANGER, trained on another base."""
    from gptjax.workdir import load_model

    workdir = tmp_path_factory.mktemp("persona") / "tiny"
    shutil.copytree(chat_workdir, workdir)
    model, _, _ = load_model(str(workdir))
    for name, rank, seed in (("HAMLET", 4, 1), ("OPHELIA", 2, 2)):
        adapted = lora.apply_lora(nnx.clone(model), lora.LoRASettings.create(rank, 8.0, "attn,mlp"), nnx.Rngs(seed))
        for i, (_, layer) in enumerate(lora.adapted_layers(adapted)):
            b = layer.lora.lora_b
            b.set_value(0.5 * jax.random.normal(jax.random.key(seed * 100 + i), b.get_value().shape))
        lora.save_adapter(adapted, workdir / "adapters" / name)
    other = nnx.clone(model)
    other.wte.embedding.set_value(other.wte.embedding.get_value() + 1.0)
    lora.save_adapter(lora.apply_lora(other, lora.LoRASettings.create(2, 8.0, "attn"), nnx.Rngs(3)),
                      workdir / "adapters" / "STRANGER")
    return str(workdir)


def count_restores(monkeypatch) -> list:
    from gptjax.train.checkpoints import Checkpoints

    calls, original = [], Checkpoints.restore_params

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Checkpoints, "restore_params", counted)
    return calls


def cli(module, capsys, *args: str) -> tuple[int, str, str]:
    try:
        module.main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_chat_persona_switches_adapters_without_reloading_the_base(persona_workdir, monkeypatch, capsys):
    from gptjax.cli import chat

    loads = count_restores(monkeypatch)
    monkeypatch.setattr(sys, "stdin", io.StringIO("/persona HAMLET\nSpeak\n/reset\n/persona OPHELIA\nSpeak\n"
                                                  "/reset\n/persona HAMLET\nSpeak\n/persona a gentle lord\n/quit\n"))
    code, out, err = cli(chat, capsys, "--workdir", persona_workdir, "--max_new_tokens", "8", "--temperature", "0")
    assert code == 0, err
    assert loads == [1]
    assert out.count("(adapter HAMLET attached)") == 2 and "(adapter OPHELIA attached)" in out
    assert "(persona set)" in out
    replies = [line for line in out.split("you> ") if line.startswith("bot> ")]
    assert len(replies) == 3 and replies[0] == replies[2] and replies[0] != replies[1]


def test_switching_keeps_the_base_arrays(persona_workdir):
    from gptjax.cli.chat import Personas
    from gptjax.generate.chat_session import ChatSession
    from gptjax.generate.generator import Generator
    from gptjax.generate.settings import GenerationSettings
    from gptjax.model.adapted import AdapterSet
    from gptjax.workdir import adapters_dir, load_model

    model, tokenizer, _ = load_model(persona_workdir)
    kernel = model.h[0].mlp.c_fc.kernel.get_value()
    personas = Personas(AdapterSet(model, adapters_dir(persona_workdir)))
    session = ChatSession(Generator(model, tokenizer), GenerationSettings(max_new_tokens=4))
    for name in ("HAMLET", "OPHELIA"):
        assert personas.apply(session, name) == f"(adapter {name} attached)"
        assert session.generator.params["h"][0]["mlp"]["c_fc"]["kernel"].get_value() is kernel
    assert personas.apply(session, "not an adapter") == "(persona set)" and session.persona == "not an adapter"


def test_bad_adapters_are_one_line_and_exit_2(persona_workdir, capsys):
    from gptjax.cli import generate

    for adapter, message in (("NOBODY", "adapter 'NOBODY' is neither a name in"),
                             ("STRANGER", "was trained on another base model")):
        code, _, err = cli(generate, capsys, "--workdir", persona_workdir, "--adapter", adapter, "--prompt", "a")
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and message in lines[0], err
    code, _, err = cli(generate, capsys, "--workdir", persona_workdir, "--quantize", "int4", "--prompt", "a")
    assert code == 2 and "--quantize 'int4' is unknown" in err


def test_generate_and_evaluate_with_an_adapter_and_int8(persona_workdir, capsys):
    from gptjax.cli import generate
    from gptjax.eval.heldout import evaluate_workdir

    code, out, err = cli(generate, capsys, "--workdir", persona_workdir, "--adapter", "HAMLET", "--quantize", "int8",
                         "--prompt", "Speak", "--max_new_tokens", "5", "--strategy", "greedy")
    assert code == 0 and out.startswith("Speak"), err
    plain = evaluate_workdir(persona_workdir, "val", max_tokens=256)
    int8 = evaluate_workdir(persona_workdir, "val", max_tokens=256, quantize="int8")
    adapted = evaluate_workdir(persona_workdir, "val", max_tokens=256, adapter="HAMLET")
    assert (Path(persona_workdir) / "eval_val_int8.json").is_file()
    assert (Path(persona_workdir) / "eval_val_HAMLET.json").is_file()
    assert abs(int8["bits_per_char"] - plain["bits_per_char"]) < 0.1 * plain["bits_per_char"]
    assert adapted["bits_per_char"] != plain["bits_per_char"]


def test_int8_of_an_adapted_model_is_the_int8_of_its_merged_model(persona_workdir):
    from gptjax.model.adapted import AdapterSet, servable
    from gptjax.model.quantize import quantize_int8
    from gptjax.workdir import adapters_dir, load_model

    model, _, _ = load_model(persona_workdir)
    AdapterSet(model, adapters_dir(persona_workdir)).switch("HAMLET")
    idx = np.arange(12, dtype=np.int32)[None]
    np.testing.assert_array_equal(np.asarray(servable(model, "int8")(idx)),
                                  np.asarray(quantize_int8(lora.merge_adapters(model))(idx)))
    assert lora.adapted_layers(model)  # the model keeps its adapter, ready to switch


def test_the_server_serves_each_adapter_as_a_model(persona_workdir, monkeypatch, tmp_path):
    from fastapi.testclient import TestClient

    from gptjax.serve.app import create_app
    from gptjax.serve.engine import load_engines

    with pytest.raises(UserError, match="'STRANGER' was trained on another base"):
        load_engines([persona_workdir], max_batch=2, max_tokens=8)
    stranger = Path(persona_workdir) / "adapters" / "STRANGER"
    shutil.move(stranger, tmp_path / "STRANGER")
    loads = count_restores(monkeypatch)
    try:
        engines = load_engines([persona_workdir], max_batch=2, max_tokens=8, quantize="int8")
    finally:
        shutil.move(tmp_path / "STRANGER", stranger)
    assert loads == [1]
    with TestClient(create_app(engines)) as client:
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["tiny", "tiny:HAMLET", "tiny:OPHELIA"]
        for name in ("tiny:HAMLET", "tiny:OPHELIA"):
            r = client.post("/v1/completions", json={"model": name, "prompt": "Speak", "max_tokens": 6})
            assert r.status_code == 200 and r.json()["model"] == name, r.text
    idx = np.arange(12, dtype=np.int32)[None]
    logits = {n: np.asarray(nnx.merge(e.generator.graphdef, e.generator.params)(idx)) for n, e in engines.items()}
    assert not np.allclose(logits["tiny:HAMLET"], logits["tiny:OPHELIA"])
    assert not np.allclose(logits["tiny"], logits["tiny:HAMLET"])


def test_a_trained_base_goes_into_the_frozen_part_of_the_state():
    from configs.base import get_config
    from gptjax.model import build_model
    from gptjax.train import state as state_lib
    from gptjax.train.adapters import place_base
    from gptjax.train.optimizer import build_optimizer

    c = get_config("smoke")
    settings = lora.LoRASettings.create(2, 4.0, "attn")
    _, params, _ = state_lib.abstract_model(c.model, 20, 0, settings)
    tx = build_optimizer(c.train, params)
    state = state_lib.fresh_state(c.model, 20, 0, tx, settings)
    _, base, _ = nnx.split(build_model(c.model, 20, nnx.Rngs(7)), nnx.Param, ...)
    placed = place_base(state, base)
    got = {k: v for k, v in flat(placed.rest).items() if k in flat(base)}
    for key, value in flat(base).items():
        np.testing.assert_array_equal(got[key], value)
    jax.tree.map(np.testing.assert_array_equal, placed.params, state.params)
    _, small, _ = nnx.split(build_model(c.model, 21, nnx.Rngs(7)), nnx.Param, ...)
    with pytest.raises(UserError, match="start from a base of this model's shape"):
        place_base(state, small)
