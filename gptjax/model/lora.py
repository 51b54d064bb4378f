"""LoRA: low-rank adapters on a GPT's attention and MLP kernels, on Flax NNX's `nnx.LoRALinear`.

A targeted `nnx.Linear` (y = x W + b) becomes a `LoRALinear` that keeps the very same kernel
and bias variables (same paths, logical axes and shardings) and adds (x A B) * alpha / rank,
A (in, rank) He-uniform and B (rank, out) zero: a freshly adapted model computes exactly the
base model's logits. Adapter parameters are `nnx.LoRAParam`s (a subclass of `nnx.Param`), so
`lora_filter` selects them and nothing else.

Settings (config.train): `lora_rank` (0 = off), `lora_alpha`, `lora_targets`: a comma-separated
string or a list of groups or layer names:
    attn  = attn.c_attn, attn.c_proj       mlp = mlp.c_fc, mlp.c_gate (SwiGLU), mlp.c_proj
    head  = lm_head (untied heads only; a tied head is the embedding, never adapted)
    c_attn, c_fc, c_gate: that layer;  c_proj: both attn.c_proj and mlp.c_proj.

Training only the adapter (the base frozen, with no optimizer state), through the existing
train step unchanged:

    model = freeze_base(apply_lora(base_model, settings, nnx.Rngs(seed)))  # after loading the base
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)  # params: the adapter alone
    tx = build_optimizer(tc, params); state = TrainState(step, params, rest, tx.init(params))
    make_train_step(graphdef, tx, tc, seed)(state, batches)     # as for full training

`freeze_base` retypes the base parameters as `FrozenParam` (not an `nnx.Param`), so every
`nnx.split(model, nnx.Param, ...)` of the train step, the eval step and the state shardings
puts the base among `rest`: no gradient, no optimizer state, never updated. Without freezing,
`trainable_and_frozen(model)` gives the same split by filter (`lora_filter` in place of
`nnx.Param`), for code that passes its own filter.

The optimizer's weight-decay mask and Muon select parameters named `kernel`; adapter
parameters are `lora_a` / `lora_b`, so they get AdamW without weight decay.

An adapter is saved alone (`adapter.safetensors` + `adapter.json`: rank, alpha, targets and a
checksum of the base it was trained on), loaded over its base, switched for another without
touching the base, or merged into the base weights (W + A B * alpha / rank) as a plain GPT.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.flax
from flax import nnx

from gptjax.errors import UserError
from gptjax.model import submodules
from gptjax.model.gpt import GPT, axes

GROUPS = {"attn": ("attn.c_attn", "attn.c_proj"), "mlp": ("mlp.c_fc", "mlp.c_gate", "mlp.c_proj"),
          "head": ("lm_head",)}
LAYERS = {"c_attn": ("attn.c_attn",), "c_fc": ("mlp.c_fc",), "c_gate": ("mlp.c_gate",),
          "c_proj": ("attn.c_proj", "mlp.c_proj"), "lm_head": ("lm_head",),
          **{name: (name,) for group in GROUPS.values() for name in group}}
WEIGHTS_FILE, INFO_FILE = "adapter.safetensors", "adapter.json"
FORMAT = "gptjax-lora-adapter"


class FrozenParam(nnx.Variable):
    """A base parameter while its adapters train: not an `nnx.Param`, so whatever trains the
    `nnx.Param`s of a model (train step, optimizer, its state's shardings) leaves it alone."""


lora_filter = nnx.LoRAParam
base_filter = nnx.Any(FrozenParam, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)))


@dataclasses.dataclass(frozen=True)
class LoRASettings:
    rank: int
    alpha: float
    targets: tuple[str, ...]  # qualified layer names, e.g. ("attn.c_attn", "mlp.c_fc")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @classmethod
    def create(cls, rank: int, alpha: float, targets: str | Sequence[str], where: str = "train") -> "LoRASettings":
        """Checked settings; `targets` as in the module docstring."""
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
            raise UserError(f"{where}.lora_rank={rank!r} must be a positive integer (0 turns LoRA off)")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) or alpha <= 0:
            raise UserError(f"{where}.lora_alpha={alpha!r} must be positive (adapters add (x A B) * alpha / rank)")
        return cls(int(rank), float(alpha), resolve_targets(targets, where))

    @classmethod
    def from_config(cls, train_config) -> "LoRASettings | None":
        """Settings from config.train, or None when `lora_rank` is 0 or absent."""
        rank = train_config.get("lora_rank", 0)
        if rank == 0:
            return None
        return cls.create(rank, train_config.get("lora_alpha", 16.0), train_config.get("lora_targets", "attn,mlp"))

    def to_json(self) -> dict:
        return {"rank": self.rank, "alpha": self.alpha, "targets": list(self.targets)}


def resolve_targets(targets: str | Sequence[str], where: str = "train") -> tuple[str, ...]:
    names = targets.split(",") if isinstance(targets, str) else list(targets)
    out: list[str] = []
    for name in (str(n).strip() for n in names if str(n).strip()):
        found = GROUPS.get(name) or LAYERS.get(name)
        if found is None:
            raise UserError(f"{where}.lora_targets names {name!r}, which is no layer group or layer; use groups "
                            f"{sorted(GROUPS)} or layers {sorted(LAYERS)}")
        out += [n for n in found if n not in out]
    if not out:
        raise UserError(f"{where}.lora_targets is empty; name the layers to adapt, e.g. 'attn,mlp'")
    return tuple(out)


class LoRALinear(nnx.LoRALinear):
    """`nnx.LoRALinear` with LoRA's alpha / rank scale, and the adapter applied to the rows of
    x flattened to 2-D, as the base kernel is (`rows_dot_general`), so that their gradients
    avoid the transposed activation copies a 3-D product costs on CPU."""

    def __init__(self, *args, lora_rank: int, lora_alpha: float, **kwargs):
        super().__init__(*args, lora_rank=lora_rank, **kwargs)
        self.lora_alpha = lora_alpha
        self.lora_scale = lora_alpha / lora_rank

    def __call__(self, x: jax.Array, out_sharding=None) -> jax.Array:
        y = nnx.Linear.__call__(self, x, out_sharding=out_sharding)
        delta = self.lora(x.reshape(-1, x.shape[-1])) * self.lora_scale
        return y + delta.reshape(y.shape).astype(y.dtype)


def layer_name(path: tuple) -> str:
    """'attn.c_attn' for ('h', 3, 'attn', 'c_attn'); 'lm_head' for ('lm_head',)."""
    return submodules.dotted(path[-2:] if len(path) > 1 else path)


def adapted_layers(model: nnx.Module) -> list[tuple[tuple, LoRALinear]]:
    return submodules.find(model, lambda _, m: isinstance(m, LoRALinear))


def apply_lora(model: GPT, settings: LoRASettings, rngs: nnx.Rngs) -> GPT:
    """Replace, in place, every targeted `nnx.Linear` of `model` by a `LoRALinear` around the same
    kernel and bias variables; returns the model. A targeted layer the model lacks (c_gate without
    SwiGLU, lm_head with a tied head) is refused only when it was asked for alone."""
    if not isinstance(model, GPT):
        raise UserError(f"LoRA adapts a GPT; this model is a {type(model).__name__}")
    if adapted_layers(model):
        raise UserError("the model already carries LoRA adapters; remove_adapters or merge_adapters first")
    targets = set(settings.targets)
    layers = submodules.find(model, lambda p, m: type(m) is nnx.Linear and layer_name(p) in targets)
    missing = targets - {layer_name(p) for p, _ in layers} - {"mlp.c_gate"}  # c_gate: only with SwiGLU
    if not layers or missing:
        raise UserError(f"train.lora_targets names {sorted(missing)}, which this model does not have "
                        "(c_gate exists with activation=swiglu, lm_head with tie_embeddings=False)")
    for path, linear in layers:
        submodules.replace(model, path, adapt(linear, settings, rngs))
    return model


def adapt(linear: nnx.Linear, s: LoRASettings, rngs: nnx.Rngs) -> LoRALinear:
    kernel = linear.kernel
    d_in, d_out = kernel.get_value().shape
    logical = kernel.get_metadata().get("logical_axes") or (None, None)
    bias = linear.bias.get_value() if linear.use_bias else None
    out = LoRALinear(d_in, d_out, lora_rank=s.rank, lora_alpha=s.alpha, lora_dtype=linear.dtype,
                     lora_param_dtype=linear.param_dtype, a_metadata=axes(logical[0], None),
                     b_metadata=axes(None, logical[1]), kernel_init=submodules.keep(kernel.get_value()),
                     bias_init=submodules.keep(bias), rngs=rngs, **submodules.linear_settings(linear))
    out.kernel = kernel  # the base's own variables, with their metadata (and sharding)
    if linear.use_bias:
        out.bias = linear.bias
    return out


def unadapt(layer: LoRALinear, kernel: nnx.Variable) -> nnx.Linear:
    """A plain `nnx.Linear` computing with `kernel` and the layer's bias."""
    d_in, d_out = kernel.get_value().shape
    bias = layer.bias.get_value() if layer.use_bias else None
    out = nnx.Linear(d_in, d_out, kernel_init=submodules.keep(kernel.get_value()),
                     bias_init=submodules.keep(bias), rngs=nnx.Rngs(0), **submodules.linear_settings(layer))
    out.kernel = kernel
    if layer.use_bias:
        out.bias = layer.bias
    return out


def remove_adapters(model: GPT) -> GPT:
    """Drop the adapters in place, leaving the base layers (and their arrays) as they were."""
    for path, layer in adapted_layers(model):
        submodules.replace(model, path, unadapt(layer, layer.kernel))
    return model


def retype(model: nnx.Module, which, kind: type) -> nnx.Module:
    """Give every variable `which` selects the type `kind`, keeping its value and metadata."""
    for path, var in nnx.to_flat_state(nnx.state(model, which)):
        setattr(submodules.node_at(model, path[:-1]), path[-1], kind.from_metadata(var.get_raw_value(),
                                                                                   var.get_metadata()))
    return model


def freeze_base(model: GPT) -> GPT:
    """In place: base parameters become `FrozenParam`s, adapters stay the only `nnx.Param`s."""
    return retype(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)), FrozenParam)


def thaw_base(model: GPT) -> GPT:
    """In place: `FrozenParam`s become `nnx.Param`s again."""
    return retype(model, FrozenParam, nnx.Param)


def merged_kernel(layer: LoRALinear) -> jax.Array:
    w = layer.kernel.get_value()
    a, b = layer.lora.lora_a.get_value(), layer.lora.lora_b.get_value()
    delta = jnp.matmul(a.astype(jnp.float32), b.astype(jnp.float32)) * layer.lora_scale
    return (w.astype(jnp.float32) + delta).astype(w.dtype)


def merge_adapters(model: GPT) -> GPT:
    """A plain GPT with W + A B * alpha / rank in every adapted kernel (for export or fast serving);
    `model` is left as it was, and the two share every array the merge did not change."""
    merged = thaw_base(nnx.clone(model))
    for path, layer in adapted_layers(merged):
        submodules.replace(merged, path, unadapt(layer, layer.kernel.replace(merged_kernel(layer))))
    return merged


def current_settings(model: GPT) -> LoRASettings | None:
    """The settings the model's adapters were built with (None without adapters)."""
    layers = adapted_layers(model)
    if not layers:
        return None
    _, first = layers[0]
    rank = first.lora.lora_a.get_value().shape[1]
    names = {layer_name(p) for p, _ in layers}
    order = [n for group in GROUPS.values() for n in group]
    return LoRASettings(rank, first.lora_alpha, tuple(n for n in order if n in names))


# ----------------------------------------------------------------------------- states


def trainable_and_frozen(model: GPT) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, adapter parameters, everything else): what an optimizer sees, and what it must not.

    `nnx.merge(graphdef, trainable, frozen)` rebuilds the model."""
    return nnx.split(model, lora_filter, ...)


def split_lora(model: GPT) -> tuple[nnx.GraphDef, nnx.State, nnx.State, nnx.State]:
    """(graphdef, base parameters, adapter parameters, other variables such as BatchNorm statistics)."""
    return nnx.split(model, base_filter, lora_filter, ...)


def adapter_arrays(model: GPT) -> dict[str, jax.Array]:
    """Adapter parameters by dotted path ('h.0.attn.c_attn.lora.lora_a')."""
    return {submodules.dotted(path): var.get_value()
            for path, var in nnx.to_flat_state(nnx.state(model, lora_filter))}


def adapter_size(model: GPT) -> tuple[int, int]:
    """(parameters, bytes) of the model's adapters."""
    arrays = adapter_arrays(model).values()
    return sum(a.size for a in arrays), sum(a.size * a.dtype.itemsize for a in arrays)


def base_checksum(model: GPT) -> str:
    """sha256 over the base parameters' paths, shapes, dtypes and bytes (adapters excluded): an
    adapter records the base it was trained on, and is refused over another. It reads every
    base weight once (about a second for 124M parameters on CPU)."""
    h = hashlib.sha256()
    for path, var in sorted(nnx.to_flat_state(nnx.state(model, base_filter)), key=lambda kv: submodules.dotted(kv[0])):
        a = np.ascontiguousarray(jax.device_get(var.get_value()))
        h.update(f"{submodules.dotted(path)}:{a.dtype}:{a.shape};".encode())
        h.update(a.tobytes())
    return "sha256:" + h.hexdigest()


# ----------------------------------------------------------------------------- files


class Adapter(NamedTuple):
    """One saved adapter: its settings, arrays by dotted path, and its base's checksum."""

    settings: LoRASettings
    arrays: dict[str, Any]
    base_checksum: str
    name: str = ""


class AdapterInfo(NamedTuple):
    path: str
    params: int
    bytes: int  # size of adapter.safetensors


def write_atomically(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_adapter(model: GPT, directory: str | os.PathLike, checksum: str | None = None) -> AdapterInfo:
    """Write the model's adapter (only) to directory/adapter.safetensors and adapter.json.

    `checksum`: the base's `base_checksum`, when already known."""
    settings = current_settings(model)
    if settings is None:
        raise UserError("the model has no LoRA adapters to save (train.lora_rank is 0?)")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    arrays = adapter_arrays(model)
    weights = out / WEIGHTS_FILE
    write_atomically(weights, lambda p: safetensors.flax.save_file(arrays, str(p), metadata={"format": FORMAT}))
    params, _ = adapter_size(model)
    info = {"format": FORMAT, "version": 1, **settings.to_json(), "base_checksum": checksum or base_checksum(model),
            "params": params, "bytes": weights.stat().st_size}
    write_atomically(out / INFO_FILE, lambda p: p.write_text(json.dumps(info, indent=2) + "\n"))
    return AdapterInfo(str(out), params, info["bytes"])


def load_adapter(directory: str | os.PathLike, name: str = "") -> Adapter:
    """Read an adapter saved by `save_adapter`; `name` defaults to the directory's name."""
    d = Path(directory)
    info_path, weights = d / INFO_FILE, d / WEIGHTS_FILE
    if not info_path.is_file() or not weights.is_file():
        raise UserError(f"{d} is no LoRA adapter: it needs {INFO_FILE} and {WEIGHTS_FILE}")
    try:
        info = json.loads(info_path.read_text())
        if info.get("format") != FORMAT:
            raise ValueError(f"format is {info.get('format')!r}, not {FORMAT!r}")
        settings = LoRASettings.create(info["rank"], info["alpha"], info["targets"], where=str(info_path))
        arrays = safetensors.flax.load_file(str(weights))
        checksum = str(info["base_checksum"])
    except UserError:
        raise
    except (ValueError, KeyError, TypeError, OSError, safetensors.SafetensorError) as e:
        raise UserError(f"the adapter in {d} cannot be read ({type(e).__name__}: {e}); save it again") from None
    return Adapter(settings, arrays, checksum, name or d.name)


def find_adapters(root: str | os.PathLike) -> dict[str, Path]:
    """name -> directory of every adapter directly under `root` (e.g. workdir/adapters/HAMLET)."""
    r = Path(root)
    if not r.is_dir():
        return {}
    return {d.name: d for d in sorted(r.iterdir()) if (d / INFO_FILE).is_file()}


def attach_adapter(model: GPT, adapter: Adapter, checksum: str | None = None, rngs: nnx.Rngs | None = None) -> GPT:
    """Put `adapter` on `model` in place, replacing any adapter it carries; the base's arrays are
    neither copied nor reloaded. `checksum`: the base's `base_checksum`, computed once by a caller
    that switches often (it is computed here otherwise); a mismatch is refused."""
    where = f"adapter {adapter.name!r}" if adapter.name else "the adapter"
    found = checksum or base_checksum(model)
    if found != adapter.base_checksum:
        raise UserError(f"{where} was trained on another base model (checksum {adapter.base_checksum[:19]}..., "
                        f"this base {found[:19]}...); load the base it was trained on")
    if current_settings(model) != adapter.settings:
        remove_adapters(model)
        apply_lora(model, adapter.settings, rngs or nnx.Rngs(0))
    variables = dict((submodules.dotted(p), v) for p, v in nnx.to_flat_state(nnx.state(model, lora_filter)))
    if set(variables) != set(adapter.arrays):
        extra = sorted(set(adapter.arrays) ^ set(variables))[:3]
        raise UserError(f"{where} does not fit this model: its layers differ (e.g. {extra}); "
                        "it was saved from a model of another shape")
    for key, var in variables.items():
        value = adapter.arrays[key]
        if value.shape != var.get_value().shape:
            raise UserError(f"{where} does not fit this model: {key} is {value.shape}, "
                            f"the model needs {var.get_value().shape}")
        var.set_value(jnp.asarray(value, var.get_value().dtype))
    return model
