"""The device mesh and the rules that place parameters and batches on it.

Mesh axes: `data` (replicas), `fsdp` (replicas whose parameters and optimizer state are
split between them) and `tensor` (Megatron-style split of heads / MLP / vocabulary).
Parameters name their dimensions with logical axes (`gptjax.model.gpt.axes`); RULES map
those to mesh axes. JAX's SPMD partitioner inserts every collective.
"""

from __future__ import annotations

import math

import jax
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gptjax.errors import UserError

AXES = ("data", "fsdp", "tensor")
BATCH = ("data", "fsdp")  # the batch dimension is split over every replica
RULES = {
    "batch": BATCH,
    "embed": "fsdp",
    "vocab": "tensor",
    "heads": "tensor",
    "mlp": "tensor",
    "length": None,
}
PRESETS = {"dp": dict(data=-1, fsdp=1, tensor=1), "fsdp": dict(data=1, fsdp=-1, tensor=1),
           "fsdp+tp": dict(data=1, fsdp=-1, tensor=2)}


def mesh_shape(mesh_config, n_devices: int) -> tuple[int, int, int]:
    """Sizes of (data, fsdp, tensor); one -1 takes the devices that are left."""
    preset = mesh_config.get("preset", "")
    if preset and preset not in PRESETS:
        raise UserError(f"mesh.preset={preset!r} is unknown; use one of {sorted(PRESETS)}")
    sizes = dict(PRESETS[preset]) if preset else {a: int(mesh_config[a]) for a in AXES}
    free = [a for a in AXES if sizes[a] == -1]
    if len(free) > 1 or any(s == 0 or s < -1 for s in sizes.values()):
        raise UserError(f"mesh {sizes} is invalid: sizes must be positive, with at most one -1")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if free:
        if n_devices % fixed:
            raise UserError(f"mesh {sizes} does not divide {n_devices} devices ({n_devices} % {fixed} != 0)")
        sizes[free[0]] = n_devices // fixed
    if math.prod(sizes.values()) != n_devices:
        raise UserError(f"mesh data={sizes['data']} x fsdp={sizes['fsdp']} x tensor={sizes['tensor']} = "
                        f"{math.prod(sizes.values())} devices, but there are {n_devices}")
    return sizes["data"], sizes["fsdp"], sizes["tensor"]


def build_mesh(mesh_config, devices=None) -> Mesh:
    """The mesh over `devices` (default: every device of every process).

    `create_device_mesh` orders TPU chips so that neighbouring mesh positions are neighbours
    on the interconnect; elsewhere it keeps each process's devices together, which is what
    lets every process load a contiguous block of batch rows.
    """
    devices = jax.devices() if devices is None else list(devices)
    shape = mesh_shape(mesh_config, len(devices))
    return Mesh(mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True), AXES)


def spec_for(logical: tuple, shape: tuple, mesh: Mesh, where: str = "") -> P:
    """Map logical axis names to a PartitionSpec, refusing dimensions the mesh cannot split."""
    out = []
    for name, dim in zip(logical, shape):
        axis = RULES.get(name) if name else None
        size = math.prod(mesh.shape[a] for a in ((axis,) if isinstance(axis, str) else axis or ()))
        if size > 1 and dim % size:
            raise UserError(f"{where} dimension {name}={dim} is not divisible by mesh axis {axis} of size {size}; "
                            "change the model size or the mesh")
        out.append(axis if size > 1 else None)
    return P(*out)


def state_shardings(abstract_state: nnx.State, mesh: Mesh) -> nnx.State:
    """NamedShardings for every variable of an (abstract) model state, from its logical axes."""

    def one(path, var):
        logical = var.get_metadata().get("logical_axes") or (None,) * var.get_value().ndim
        where = "/".join(str(getattr(k, "key", k)) for k in path)
        return var.replace(NamedSharding(mesh, spec_for(logical, var.get_value().shape, mesh, where)))

    return jax.tree_util.tree_map_with_path(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, leading: int = 0) -> NamedSharding:
    """Rows over the replica axes; `leading` unsharded dimensions (steps, accumulation) before them."""
    return NamedSharding(mesh, P(*([None] * leading), BATCH))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
