"""Who and where this process is (torchrun or Slurm environment), process-group setup and teardown."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int  # global rank
    local_rank: int  # rank within the node (picks the GPU)
    world_size: int  # number of processes
    device: torch.device  # this process's training device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_world() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's variables, else Slurm's (srun without torchrun)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env.get("LOCAL_RANK", 0)), int(env["WORLD_SIZE"])
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", 0)), int(env["SLURM_NTASKS"])
    return 0, 0, 1


def pick_device(choice: str, local_rank: int) -> torch.device:
    """Training device for a trainer.device setting (auto = cuda when available): GPU local_rank, or with more
    processes on the node than GPUs, GPU local_rank modulo their count (processes then share a GPU)."""
    from ..plan import device_type

    if device_type(choice, torch.cuda.is_available()) == "cuda":
        index = local_rank % max(1, torch.cuda.device_count())
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def backend_for(device: torch.device, local_world_size: int, gpus: int) -> str:
    """NCCL when every process of the node has a GPU of its own; gloo on CPU, and where processes share a GPU
    (NCCL refuses two ranks on one device)."""
    return "nccl" if device.type == "cuda" and local_world_size <= gpus else "gloo"


def init_world(device_choice: str) -> World:
    """Start the process group when launched with several processes (NCCL on GPUs, gloo on CPU)."""
    rank, local_rank, world_size = env_world()
    device = pick_device(device_choice, local_rank)
    if world_size > 1 and not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)  # torchrun's processes on this node
        backend = backend_for(device, local, torch.cuda.device_count() if device.type == "cuda" else 0)
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend, rank=rank, world_size=world_size, **kwargs)
    return World(rank, local_rank, world_size, device)


def shutdown(sync: bool = False) -> None:
    """Leave the process group. ``sync`` (a clean end that every rank reaches): first wait until every rank
    has come back from its last collective, so that no rank tears down its gloo connections while a peer is
    still in one (seen: the peer aborting with "terminate called without an active exception")."""
    if dist.is_initialized():
        if sync and dist.get_world_size() > 1:
            all_returned()
        dist.destroy_process_group()


def all_returned(timeout_s: float = 600.0) -> None:
    """Wait on the rendezvous store (not over gloo's connections) until every rank has called this. A gloo
    barrier does not do: it returns on a rank once that rank has heard from every peer, while a slower peer
    may still be waiting for the last message, and the connection closing under it aborted the peer (1 in 10
    four-process runs on a loaded 2-core machine)."""
    from datetime import timedelta

    store = dist.distributed_c10d._get_default_store()
    round_ = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")  # torchrun's restarts reuse the store
    store.set(f"resnext/returned/{round_}/{dist.get_rank()}", "1")
    store.wait([f"resnext/returned/{round_}/{r}" for r in range(dist.get_world_size())], timedelta(seconds=timeout_s))


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place; a no-op for one process)."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
