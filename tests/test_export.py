"""`python -m gptjax.export`: a trained workdir out as a Hugging Face GPT-2 directory."""

import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np

from gptjax.model import gpt2
from gptjax.train.job import run
from gptjax.workdir import load_model
from tests.test_gpt2 import IDS, gpt2_dir  # noqa: F401  (the tiny GPT-2 directory fixture)
from tests.test_init_from import tree_digest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def export(*args):
    return subprocess.run([sys.executable, "-m", "gptjax.export", *args], cwd=ROOT, capture_output=True, text=True)


def fine_tune(gpt2_dir, config, workdir):  # noqa: F811
    config.train.init_from, config.data.tokenizer, config.train.steps = f"hf:{gpt2_dir}", "bpe", 5
    run(config, workdir)


def test_a_fine_tuned_gpt2_goes_out_with_the_logits_gptjax_computes(gpt2_dir, tiny_config, tmp_path):  # noqa: F811
    fine_tune(gpt2_dir, tiny_config, str(tmp_path / "ft"))
    done = export("--workdir", str(tmp_path / "ft"), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "exported" in done.stdout
    model, _, _ = load_model(str(tmp_path / "ft"))
    again, tokenizer = gpt2.load_gpt2(str(tmp_path / "out"))
    np.testing.assert_array_equal(np.asarray(model(jnp.asarray(IDS))), np.asarray(again(jnp.asarray(IDS))))
    assert tokenizer.encode("the end").tolist() == load_model(str(tmp_path / "ft"))[1].encode("the end").tolist()


def test_an_incompatible_model_is_refused_in_one_line_and_nothing_is_written(tiny_config, tmp_path):
    run(tiny_config, str(tmp_path / "char"))  # RoPE and a char tokenizer: not expressible as GPT-2
    before = tree_digest(tmp_path)
    done = export("--workdir", str(tmp_path / "char"), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "model.pos_encoding='rope'" in done.stderr and "data.tokenizer='char'" in done.stderr
    assert tree_digest(tmp_path) == before and not (tmp_path / "out").exists()


def test_a_missing_workdir_is_one_clear_line(tmp_path):
    done = export("--workdir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "no trained model" in done.stderr and done.stderr.count("\n") == 1
    assert os.listdir(tmp_path) == []


def test_a_lora_adapter_is_merged_into_the_exported_weights(gpt2_dir, tiny_config, tmp_path):  # noqa: F811
    import jax
    from flax import nnx

    from gptjax.model import lora

    fine_tune(gpt2_dir, tiny_config, str(tmp_path / "ft"))
    model, _, _ = load_model(str(tmp_path / "ft"))
    checksum = lora.base_checksum(model)
    lora.apply_lora(model, lora.LoRASettings.create(2, 4.0, "attn"), nnx.Rngs(0))
    for i, (_, layer) in enumerate(lora.adapted_layers(model)):
        b = layer.lora.lora_b
        b.set_value(0.05 * jax.random.normal(jax.random.key(i), b.get_value().shape))
    lora.save_adapter(model, str(tmp_path / "adapter"), checksum)
    done = export("--workdir", str(tmp_path / "ft"), "--out", str(tmp_path / "out"),
                  "--adapter", str(tmp_path / "adapter"))
    assert done.returncode == 0, done.stderr
    exported, _ = gpt2.load_gpt2(str(tmp_path / "out"))
    np.testing.assert_allclose(np.asarray(exported(jnp.asarray(IDS))), np.asarray(model(jnp.asarray(IDS))), atol=1e-5)
    plain, _, _ = load_model(str(tmp_path / "ft"))
    assert not np.allclose(np.asarray(plain(jnp.asarray(IDS))), np.asarray(model(jnp.asarray(IDS))), atol=1e-3)
