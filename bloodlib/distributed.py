"""torch.distributed for the training scaffold: which process this is, joining torchrun's job, and
the few collectives :func:`bloodlib.training.fit` needs.

A run is distributed when torchrun started it -- ``torchrun --nproc-per-node N -m bloodlib train ...``,
``srun torchrun ...`` on a cluster, or ``bloodlib train --nproc N``, which calls torchrun's own
launcher (:func:`launch`) -- so that its environment holds ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``. :func:`process_group` then joins the job (NCCL on CUDA, Gloo
on the CPU) for the duration of a block. Without that environment, or with ``WORLD_SIZE=1``,
nothing here initialises torch.distributed and every helper is what a single process would do:
:func:`world` is rank 0 of 1, :func:`from_main` calls its function, :func:`mean` returns its input.

Importing this module sets nothing.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

T = TypeVar("T")

#: How long a collective waits for the other processes: rank 0 validates (and writes checkpoints)
#: while the others wait, which takes minutes for the paper profile's validation sets.
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class World:
    """This process's place in a distributed run.

    Attributes:
        rank: global rank (0 is the main process: it validates and writes every file).
        size: number of processes (1 = not distributed).
        local_rank: rank on this machine (its GPU).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.size < 1 or not 0 <= self.rank < self.size or self.local_rank < 0:
            raise ValueError(f"need size >= 1, 0 <= rank < size and local_rank >= 0, got {self}")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched_world(environ: Mapping[str, str] | None = None) -> World:
    """The world torchrun's environment variables describe (one process when they are absent).

    Raises:
        ValueError: ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` are not integers or are inconsistent.
    """
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return World()
    try:
        values = {name: int(environ.get(name, "0")) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    except ValueError as err:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers: {err}") from None
    return World(rank=values["RANK"], size=values["WORLD_SIZE"], local_rank=values["LOCAL_RANK"])


def world() -> World:
    """This process's place in the default process group: rank 0 of 1 when none is initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=launched_world().local_rank)


def default_device(where: World) -> torch.device:
    """The device a process trains on: its local GPU when CUDA is available, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", where.local_rank) if where.distributed else torch.device("cuda")


@contextmanager
def process_group(*, backend: str | None = None) -> Iterator[World]:
    """Join torchrun's job for the duration of the block and leave it afterwards.

    Does nothing (and yields a single process's :class:`World`) when torchrun did not start this
    process, when ``WORLD_SIZE`` is 1, or when a process group is already initialised.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; default NCCL when CUDA is available, else Gloo.
    """
    launched = launched_world()
    if not launched.distributed or dist.is_initialized():
        yield world()
        return
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    device_id = None
    if backend == "nccl":
        device_id = torch.device("cuda", launched.local_rank)
        torch.cuda.set_device(device_id)
    dist.init_process_group(backend, timeout=TIMEOUT, device_id=device_id)
    try:
        yield world()
    finally:
        dist.destroy_process_group()


def launch(nproc: int, args: Sequence[str]) -> int:
    """Run ``python -m bloodlib <args>`` in ``nproc`` processes on this machine with torchrun's own
    launcher (``torchrun --standalone --nproc-per-node nproc -m bloodlib <args>``); the exit status.

    Raises:
        ValueError: ``nproc`` < 1.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        with kept_signal_handlers():
            run(parse_args(torchrun_args(nproc, args)))
    except ChildFailedError:  # torchrun has printed which rank failed and its traceback
        return 1
    return 0


@contextmanager
def kept_signal_handlers() -> Iterator[None]:
    """Restore this process's signal handlers on exit: torchrun's launcher, run in-process, replaces
    SIGINT/SIGTERM/SIGHUP/SIGQUIT handlers with its own (which raise ``SignalException``) and
    leaves them there, so a later Ctrl-C in the same process would no longer be a KeyboardInterrupt."""
    names = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
    saved = {s: signal.getsignal(s) for s in (getattr(signal, n) for n in names if hasattr(signal, n))}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:
                signal.signal(signum, handler)


def torchrun_args(nproc: int, args: Sequence[str]) -> list[str]:
    """torchrun's command line for ``python -m bloodlib <args>`` in ``nproc`` local processes."""
    return ["--standalone", "--nproc-per-node", str(nproc), "-m", "bloodlib", *args]


def from_main(compute: Callable[[], T]) -> T:
    """``compute()`` run by rank 0 alone, its result sent to every process (a picklable object)."""
    if not world().distributed:
        return compute()
    box = [compute() if world().is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: T) -> list[T]:
    """Every process's ``value`` (a picklable object), by rank, on every process."""
    if not world().distributed:
        return [value]
    out: list[Any] = [None] * world().size
    dist.all_gather_object(out, value)
    return out


def mean(values: dict[str, float]) -> dict[str, float]:
    """The mean over processes of each number (each process holds the same keys)."""
    if not world().distributed:
        return values
    every = gather(values)
    return {key: sum(d[key] for d in every) / len(every) for key in values}


def all_finite(loss: torch.Tensor) -> bool:
    """Whether ``loss`` is finite on every process (one small all-reduce on ``loss``'s device)."""
    finite = torch.isfinite(loss.detach()).float().reshape(1)
    if world().distributed:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every process rank 0's buffers of ``module`` (batch-norm statistics: each process
    updates them with its own batches; DDP sends rank 0's at the start of every forward)."""
    if world().distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def barrier() -> None:
    """Wait until every process has arrived here (nothing for a single process)."""
    if world().distributed:
        dist.barrier()


class ShardedSampler(Sampler[int]):
    """One process's disjoint share of the indices ``sampler`` draws in an epoch.

    All processes draw the same indices (the epoch's sampler draws from a generator seeded with the
    epoch's seed); process ``rank`` takes every ``size``-th of them from position ``rank``, after
    the last ``len % size`` are left out so that every process gets the same number. With a batch
    of ``b`` per process, step ``k``'s batches of all processes together are the single-process
    epoch's ``k``-th batch of ``b * size`` draws.

    Raises:
        ValueError: the sampler draws fewer indices than there are processes.
    """

    def __init__(self, sampler: Sampler[int], *, rank: int, size: int) -> None:
        self.sampler, self.rank, self.size = sampler, rank, size
        World(rank=rank, size=size)  # validates rank and size
        if shard_length(len(sampler), size) == 0:
            raise ValueError(f"the sampler draws {len(sampler)} indices, fewer than the {size} processes")

    def __len__(self) -> int:
        return shard_length(len(self.sampler), self.size)

    def __iter__(self) -> Iterator[int]:
        indices = list(self.sampler)  # lazily, at the first batch, as the single-process sampler draws
        yield from indices[self.rank : len(self) * self.size : self.size]


def shard_length(count: int, size: int) -> int:
    """Draws per process when ``count`` draws are shared by ``size`` processes (the rest is left out)."""
    return count // size


def seed_worker_for_rank(worker_id: int, *, rank: int) -> None:
    """``worker_init_fn`` of a data loader on process ``rank``: its workers' Python, NumPy and torch
    RNGs re-seeded apart from the other processes' workers (whose epoch generator is the same)."""
    seed = (torch.initial_seed() + 1_000_003 * rank) % 2**63
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
