"""Find a model's layers by path and swap them for others: what LoRA and quantisation do.

Paths are the tuples `nnx.iter_graph` yields, e.g. ('h', 0, 'attn', 'c_attn'); their dotted
form ('h.0.attn.c_attn') names a layer in files and messages.
"""

from __future__ import annotations

from typing import Callable

from flax import nnx

Path = tuple


def dotted(path: Path) -> str:
    return ".".join(str(key) for key in path)


def find(model: nnx.Module, wanted: Callable[[Path, object], bool]) -> list[tuple[Path, nnx.Module]]:
    """(path, module) of every module `wanted(path, module)` selects, in graph order."""
    return [(path, node) for path, node in nnx.iter_graph(model)
            if isinstance(node, nnx.Module) and wanted(path, node)]


def node_at(model: nnx.Module, path: Path):
    for key in path:
        model = model[key] if isinstance(key, int) else getattr(model, key)
    return model


def replace(model: nnx.Module, path: Path, module: nnx.Module) -> None:
    """Put `module` where `path` points, in place."""
    parent, key = node_at(model, path[:-1]), path[-1]
    if isinstance(key, int):
        parent[key] = module
    else:
        setattr(parent, key, module)


def linear_settings(linear: nnx.Linear) -> dict:
    """Constructor arguments that rebuild `linear`'s computation around other parameters."""
    if linear.kernel.get_value().ndim != 2:
        raise ValueError(f"expected a 2-D kernel, got shape {linear.kernel.get_value().shape}")
    return dict(use_bias=linear.use_bias, dtype=linear.dtype, param_dtype=linear.param_dtype,
                precision=linear.precision, dot_general=linear.dot_general, promote_dtype=linear.promote_dtype,
                preferred_element_type=linear.preferred_element_type)


def keep(value) -> Callable:
    """An initializer that returns `value`: a module built with it allocates nothing new."""
    return lambda *_: value
