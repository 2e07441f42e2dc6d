"""Process groups for torchrun: one process per device, shards split by rank.

Part of the torch-free floor: torch is imported only inside the functions that need it, so a
single-process run of a torch-free stage (a store writer given `World()`) never loads it.
`World()` is a process running alone; every command gets its group and device from
`process_group`."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Protocol

if TYPE_CHECKING:
    import torch


class ProcessGroup(Protocol):
    """What the store writer and the loops need of a group: `World`, or a test's stand-in."""

    rank: int
    size: int

    @property
    def is_main(self) -> bool: ...

    def broadcast(self, obj: Any) -> Any: ...

    def barrier(self) -> None: ...

    def all_sum(self, value: float) -> float: ...


@dataclass(frozen=True)
class World:
    """The torchrun group this process belongs to; the defaults are a process running alone,
    whose collectives return at once without touching torch."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as tdist

            tdist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """rank 0's obj on every rank."""
        if self.size == 1:
            return obj
        import torch.distributed as tdist

        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def all_sum(self, value: float) -> float:
        if self.size == 1:
            return value
        import torch
        import torch.distributed as tdist

        t = torch.tensor([value], dtype=torch.float64)
        tdist.all_reduce(t)
        return float(t.item())


def init_world(device: torch.device) -> World:
    """The torchrun world from its environment variables (a single process without them).
    gloo on CPU, nccl on CUDA."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    import torch.distributed as tdist

    if not tdist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        tdist.init_process_group(backend=backend)
    return World(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def close_world(world: World) -> None:
    if world.size > 1:
        import torch.distributed as tdist

        if tdist.is_initialized():
            tdist.destroy_process_group()


def pick_device(requested: str | None, world: World | None = None) -> torch.device:
    """--device, else CUDA (this rank's local GPU) when present, else the CPU: a torch.device."""
    import torch

    local = world.local_rank if world else int(os.environ.get("LOCAL_RANK", "0"))
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but CUDA is not available")
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", local)
        return device
    return torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")


def use_device(device: torch.device, deterministic: bool = False) -> torch.device:
    """Make `device` current. `deterministic`: on CUDA, the same algorithms for the same shapes
    on every run (cuDNN's benchmark mode picks them by timing, so its rounding would vary)."""
    import torch

    if device.type == "cuda":
        torch.cuda.set_device(device)
        if deterministic:
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
    return device


@contextmanager
def process_group(requested: str | None, deterministic: bool = False) -> Iterator[tuple[World, torch.device]]:
    """A command's process group and device: `with process_group(cfg.device) as (world, device):`.
    Joins the torchrun group when there is one (alone otherwise), makes this rank's device
    current, and leaves the group on the way out, also after an error."""
    world = init_world(pick_device(requested))
    try:
        yield world, use_device(pick_device(requested, world), deterministic)
    finally:
        close_world(world)
