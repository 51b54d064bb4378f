"""GPT-2 in Hugging Face's format, in and out: a local directory <-> gptjax's `GPT`.

GPT-2 is a gptjax GPT with learned positions, LayerNorm, GELU (tanh approximation), biases
and a tied head. Its `Conv1D` weights are stored (in, out), which is `nnx.Linear`'s kernel
layout, and `c_attn` holds q, k, v side by side as gptjax's fused `c_attn` does, so every
tensor copies across unchanged. Only the vocabulary differs: gptjax pads the embedding to a
multiple of `VOCAB_PAD` rows (zeros; the logits drop them), and export cuts them off again,
so import then export gives the same tensors, bit for bit. A model whose vocabulary grew for the
chat role tokens (train/init_from.py) goes out with `vocab_size` the grown size and the added
tokens in tokenizer.json and tokenizer_config.json.

Weights are read with `safetensors` (numpy), never by unpickling. A directory holds
`config.json`, `model.safetensors` (or shards `model-0000X-of-0000Y.safetensors` named by
`model.safetensors.index.json`) and the tokenizer (`tokenizer.json`, or `vocab.json` +
`merges.txt`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

import jax.numpy as jnp
import numpy as np
from flax import nnx

from gptjax.data.tokenizers import HFBPETokenizer, Tokenizer
from gptjax.errors import UserError
from gptjax.model.gpt import GPT, GPTConfig

WEIGHTS, INDEX = "model.safetensors", "model.safetensors.index.json"
VOCAB_PAD = 64
# GPT-2's two GELU names for the tanh approximation that gptjax's `gelu` computes.
TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")
# Causal-mask buffers that old checkpoints store beside the weights; not parameters.
BUFFERS = (".attn.bias", ".attn.masked_bias")
# `config.model` keys that a GPT-2 checkpoint decides (see `model_settings`).
ARCHITECTURE = ("kind", "block_size", "n_layer", "n_head", "n_embd", "mlp_ratio", "norm", "norm_eps", "activation",
                "pos_encoding", "qk_norm", "bias", "tie_embeddings", "vocab_pad")


def tensor_paths(n_layer: int) -> dict[str, tuple]:
    """Hugging Face tensor name -> path of the same tensor in gptjax's GPT parameters."""
    names = {"wte.weight": ("wte", "embedding"), "wpe.weight": ("wpe", "embedding"),
             "ln_f.weight": ("ln_f", "norm", "scale"), "ln_f.bias": ("ln_f", "norm", "bias")}
    for i in range(n_layer):
        for norm in ("ln_1", "ln_2"):
            names[f"h.{i}.{norm}.weight"] = ("h", i, norm, "norm", "scale")
            names[f"h.{i}.{norm}.bias"] = ("h", i, norm, "norm", "bias")
        for module in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            parent, child = module.split(".")
            names[f"h.{i}.{module}.weight"] = ("h", i, parent, child, "kernel")
            names[f"h.{i}.{module}.bias"] = ("h", i, parent, child, "bias")
    return names


# ----------------------------------------------------------------------------- reading


def read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} is missing; a Hugging Face GPT-2 directory needs config.json, "
                        f"{WEIGHTS} and its tokenizer files") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e.msg}, line {e.lineno})") from None


def gpt2_config(hf: dict, *, vocab_pad: int = VOCAB_PAD, where: str = "config.json") -> GPTConfig:
    """The architecture a GPT-2 `config.json` describes; dropout 0 and float32 (compute settings
    are the caller's: `dataclasses.replace` them)."""
    refused = []
    if hf.get("model_type", "gpt2") != "gpt2":
        refused.append(f"model_type={hf['model_type']!r} (expected gpt2)")
    if hf.get("activation_function", "gelu_new") not in TANH_GELU:
        refused.append(f"activation_function={hf['activation_function']!r} (expected one of {TANH_GELU})")
    for key, expected in (("tie_word_embeddings", True), ("scale_attn_weights", True),
                          ("scale_attn_by_inverse_layer_idx", False), ("add_cross_attention", False)):
        if hf.get(key, expected) != expected:
            refused.append(f"{key}={hf[key]}")
    n_embd = hf.get("n_embd", 768)
    n_inner = hf.get("n_inner") or 4 * n_embd
    if n_inner % n_embd:
        refused.append(f"n_inner={n_inner} (not a multiple of n_embd={n_embd})")
    if refused:
        raise UserError(f"{where} describes a model gptjax's GPT cannot run: {', '.join(refused)}")
    try:
        return GPTConfig(vocab_size=hf.get("vocab_size", 50257), block_size=hf.get("n_positions", 1024),
                         n_layer=hf.get("n_layer", 12), n_head=hf.get("n_head", 12), n_embd=n_embd,
                         mlp_ratio=n_inner // n_embd, norm="layernorm", norm_eps=hf.get("layer_norm_epsilon", 1e-5),
                         activation="gelu", pos_encoding="learned", bias=True, tie_embeddings=True,
                         vocab_pad=vocab_pad)
    except ValueError as e:
        raise UserError(f"{where}: {e}") from None


def model_settings(cfg: GPTConfig) -> dict:
    """The `config.model` values (keys in ARCHITECTURE) that build `cfg`'s architecture."""
    return {"kind": "gpt", **{k: getattr(cfg, k) for k in ARCHITECTURE if k != "kind"}}


def weight_files(directory: str) -> list[str]:
    """The safetensors files of a directory: one file, or the shards its index names."""
    if not os.path.isdir(directory):
        raise UserError(f"{directory} is not a directory; give a local Hugging Face GPT-2 directory")
    single, index = os.path.join(directory, WEIGHTS), os.path.join(directory, INDEX)
    if os.path.exists(single):
        return [single]
    if os.path.exists(index):
        shards = sorted(set(read_json(index).get("weight_map", {}).values()))
        missing = [s for s in shards if not os.path.exists(os.path.join(directory, s))]
        if not shards or missing:
            raise UserError(f"{index} names shard {missing[0] if missing else '(none)'}, which is not in {directory}")
        return [os.path.join(directory, s) for s in shards]
    if any(f.endswith((".bin", ".pt", ".pth", ".ckpt")) for f in os.listdir(directory)):
        raise UserError(f"{directory} holds only pickled PyTorch weights, which gptjax never unpickles; convert "
                        "them: transformers.GPT2LMHeadModel.from_pretrained(dir).save_pretrained(dir, "
                        "safe_serialization=True)")
    raise UserError(f"{directory} has no {WEIGHTS} (nor {INDEX} with its shards)")


def read_tensors(directory: str) -> dict[str, np.ndarray]:
    """Every weight of a GPT-2 directory by its Hugging Face name, without the `transformer.`
    prefix that `GPT2LMHeadModel.save_pretrained` writes, and without the mask buffers."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    tensors = {}
    for path in weight_files(directory):
        try:
            loaded = load_file(path)
        except (SafetensorError, OSError) as e:
            raise UserError(f"{path} is not a readable safetensors file ({e})") from None
        for name, value in loaded.items():
            name = name.removeprefix("transformer.")
            if not name.endswith(BUFFERS):
                tensors[name] = value
    return tensors


def gpt2_params(tensors: dict[str, np.ndarray], cfg: GPTConfig, where: str = "the checkpoint") -> nnx.State:
    """The parameters of `GPT(cfg)` from GPT-2 tensors: the embedding padded with zero rows to
    `cfg.padded_vocab`, positions cut to `cfg.block_size`. Float16 and bfloat16 tensors (numpy
    reads the latter through ml_dtypes, which JAX registers) become `cfg.param_dtype`."""
    expected = tensor_paths(cfg.n_layer)
    unknown = sorted(set(tensors) - set(expected) - {"lm_head.weight"})
    missing = sorted(set(expected) - set(tensors))
    if missing or unknown:
        problem = f"lacks {missing[0]}" if missing else f"has {unknown[0]}, which is not a GPT-2 weight"
        raise UserError(f"{where} {problem} ({len(missing)} missing, {len(unknown)} unknown of "
                        f"{len(expected)} GPT-2 tensors for {cfg.n_layer} layers)")
    _, abstract = nnx.split(nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(0))), nnx.Param)
    by_path = {path: name for name, path in expected.items()}
    leaves = []
    for path, variable in nnx.to_flat_state(abstract):
        name = by_path[path]
        value = np.asarray(tensors[name], np.float32)
        if name == "wte.weight":
            value = np.pad(value, ((0, cfg.padded_vocab - len(value)), (0, 0)))
        elif name == "wpe.weight":
            value = value[:cfg.block_size]
        if value.shape != variable.shape:
            raise UserError(f"{where}: {name} has shape {tensors[name].shape}, expected "
                            f"{variable.shape} for this config")
        leaves.append((path, variable.replace(jnp.asarray(value, cfg.param_dtype))))
    return nnx.from_flat_state(leaves)


def load_gpt2(directory: str, *, block_size: int | None = None, vocab_pad: int = VOCAB_PAD,
              **compute) -> tuple[GPT, Tokenizer]:
    """A GPT-2 directory as a gptjax GPT and its tokenizer. `block_size` may lower the context
    below the checkpoint's positions; `compute` sets GPTConfig's compute fields (dtype,
    remat, dropout sites)."""
    cfg = gpt2_config(read_json(os.path.join(directory, "config.json")), vocab_pad=vocab_pad,
                      where=os.path.join(directory, "config.json"))
    if block_size is not None and block_size > cfg.block_size:
        raise UserError(f"model.block_size={block_size} is more than the {cfg.block_size} positions of {directory}")
    cfg = dataclasses.replace(cfg, block_size=block_size or cfg.block_size, **compute)
    params = gpt2_params(read_tensors(directory), cfg, where=directory)
    tokenizer = HFBPETokenizer.from_directory(directory)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise UserError(f"the tokenizer in {directory} has {tokenizer.vocab_size} ids, more than the "
                        f"model's vocab_size={cfg.vocab_size}")
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(0))), nnx.Param)
    return nnx.merge(graphdef, params), tokenizer


def weights_digest(directory: str) -> str:
    """sha256 over a directory's weight files, in order: where a run's weights came from."""
    digest = hashlib.sha256()
    for path in weight_files(directory):
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- writing


def incompatibilities(model: nnx.Module, tokenizer: Tokenizer) -> list[str]:
    """The settings of a model and tokenizer that GPT-2's format cannot express."""
    cfg = getattr(model, "cfg", None)
    if not isinstance(cfg, GPTConfig):
        return [f"model.kind={type(model).__name__} (GPT-2 is a GPT)"]
    wanted = dict(norm="layernorm", activation="gelu", pos_encoding="learned", qk_norm=False, bias=True,
                  tie_embeddings=True)
    found = [f"model.{k}={getattr(cfg, k)!r}" for k, v in wanted.items() if getattr(cfg, k) != v]
    if tokenizer.kind != "bpe":
        found.append(f"data.tokenizer={tokenizer.kind!r} (GPT-2 uses byte-level BPE)")
    return found


def hf_config(cfg: GPTConfig, tokenizer: Tokenizer) -> dict:
    end = tokenizer.special_ids.get("<|endoftext|>")
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": cfg.vocab_size,
            "n_positions": cfg.block_size, "n_ctx": cfg.block_size, "n_embd": cfg.n_embd, "n_layer": cfg.n_layer,
            "n_head": cfg.n_head, "n_inner": None if cfg.mlp_ratio == 4 else cfg.mlp_ratio * cfg.n_embd,
            "activation_function": "gelu_new", "layer_norm_epsilon": cfg.norm_eps,
            "resid_pdrop": cfg.resid_dropout, "embd_pdrop": cfg.embd_dropout, "attn_pdrop": cfg.attn_dropout,
            "initializer_range": 0.02, "scale_attn_weights": True, "use_cache": True,
            "tie_word_embeddings": True, "bos_token_id": end, "eos_token_id": end, "torch_dtype": "float32"}


def added_tokens(tokenizer: Tokenizer) -> dict[int, str]:
    """id -> special token, for the special tokens outside the BPE model's own vocabulary (the
    chat role tokens added to GPT-2's tokenizer), which vocab.json cannot hold."""
    inner = tokenizer.tok.get_vocab(with_added_tokens=False)
    return {i: t for t, i in sorted(tokenizer.special_ids.items(), key=lambda kv: kv[1]) if t not in inner}


def tokenizer_config(tokenizer: Tokenizer, block_size: int) -> dict:
    """tokenizer_config.json; tokens added after the BPE's own vocabulary are declared by id
    (`added_tokens_decoder`, as `transformers` saves them), so the slow tokenizer that reads
    vocab.json + merges.txt knows them as tokenizer.json does."""
    end = "<|endoftext|>" if "<|endoftext|>" in tokenizer.special_ids else None
    config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": block_size,
              "bos_token": end, "eos_token": end, "unk_token": end}
    added = added_tokens(tokenizer)
    if added:
        config["added_tokens_decoder"] = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                                   "single_word": False, "special": True} for i, t in added.items()}
        config["additional_special_tokens"] = list(added.values())
    return config


def hf_tensors(model: GPT) -> dict[str, np.ndarray]:
    """A GPT's parameters by GPT-2 tensor name, float32, padded vocabulary rows removed."""
    cfg = model.cfg
    flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    tensors = {name: np.asarray(flat[path][...], np.float32) for name, path in tensor_paths(cfg.n_layer).items()}
    tensors["wte.weight"] = np.ascontiguousarray(tensors["wte.weight"][:cfg.vocab_size])
    return tensors


def export_gpt2(model: nnx.Module, tokenizer: Tokenizer, out: str) -> None:
    """Write a Hugging Face GPT-2 directory (config.json, model.safetensors, tokenizer files)
    that `transformers.GPT2LMHeadModel.from_pretrained(out)` loads. A model GPT-2 cannot
    express, or an `out` that holds files, is refused before anything is written."""
    from safetensors.numpy import save_file

    refused = incompatibilities(model, tokenizer)
    if refused:
        raise UserError(f"GPT-2's format cannot express {', '.join(refused)}; export needs a GPT with "
                        "layernorm, gelu, learned positions, biases, a tied head and a BPE tokenizer")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise UserError(f"{out} already exists and is not an empty directory; choose a new --out")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        os.chmod(staging, 0o755)
        save_file(hf_tensors(model), os.path.join(staging, WEIGHTS), metadata={"format": "pt"})
        files = {"config.json": hf_config(model.cfg, tokenizer),
                 "tokenizer_config.json": tokenizer_config(tokenizer, model.cfg.block_size)}
        for name, content in files.items():
            with open(os.path.join(staging, name), "w", encoding="utf-8") as f:
                json.dump(content, f, indent=2)
        tokenizer.save(staging)                 # tokenizer.json
        tokenizer.tok.model.save(staging)       # vocab.json + merges.txt
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
