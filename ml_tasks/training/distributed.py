"""Where training runs: the device plan (CPU / CUDA, mixed precision) and the DDP process group.

Under ``torchrun`` (``WORLD_SIZE > 1``) every rank runs ``ml-tasks train-worker``; see docs/training.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from ml_tasks.errors import FlywheelError

log = logging.getLogger(__name__)


class DeviceError(FlywheelError, ValueError):
    """The requested device does not exist here (e.g. CUDA on a machine without a GPU)."""


@dataclass(frozen=True)
class DevicePlan:
    """Where and how to train: device, autocast dtype (None: fp32), GradScaler, pinned memory."""

    device: str
    amp_dtype: torch.dtype | None
    grad_scaler: bool
    pin_memory: bool


def plan_device(
    requested: str | None, *, cuda_available: bool, bf16_supported: bool, local_rank: int = 0
) -> DevicePlan:
    """Choose the device and mixed-precision mode (the availability is passed in, so it is testable).

    ``requested``: None / "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".

    Raises:
        DeviceError: CUDA requested but not available, or an unknown device.
    """
    choice = (requested or "auto").lower()
    if choice == "auto":
        choice = "cuda" if cuda_available else "cpu"
    if choice == "cpu":
        return DevicePlan("cpu", None, grad_scaler=False, pin_memory=False)
    if choice == "cuda" or choice.startswith("cuda:"):
        if not cuda_available:
            raise DeviceError(f"device {requested!r} requested but CUDA is not available")
        device = f"cuda:{local_rank}" if choice == "cuda" else choice
        if bf16_supported:  # bf16 has fp32's exponent range: no loss scaling needed
            return DevicePlan(device, torch.bfloat16, grad_scaler=False, pin_memory=True)
        return DevicePlan(device, torch.float16, grad_scaler=True, pin_memory=True)
    raise DeviceError(f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N")


def detect_device(requested: str | None, local_rank: int = 0) -> DevicePlan:
    """:func:`plan_device` with what this machine offers."""
    cuda = torch.cuda.is_available()
    return plan_device(
        requested,
        cuda_available=cuda,
        bf16_supported=cuda and torch.cuda.is_bf16_supported(),
        local_rank=local_rank,
    )


# -- distributed ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly single-process) job."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_from_env(env: dict[str, str] | None = None) -> DistInfo:
    """WORLD_SIZE / RANK / LOCAL_RANK as torchrun sets them (absent: one process)."""
    source = os.environ if env is None else env
    return DistInfo(
        int(source.get("WORLD_SIZE", "1")), int(source.get("RANK", "0")), int(source.get("LOCAL_RANK", "0"))
    )


def init_process_group(info: DistInfo, plan: DevicePlan) -> bool:
    """Initialise the process group when running under torchrun; True when this call created it."""
    if info.world_size <= 1 or torch_dist.is_initialized():
        return False
    backend = "nccl" if plan.device.startswith("cuda") else "gloo"
    if plan.device.startswith("cuda"):
        torch.cuda.set_device(torch.device(plan.device))
    torch_dist.init_process_group(backend=backend, timeout=dt.timedelta(minutes=10))
    log.info("process group: backend %s, rank %d of %d", backend, info.rank, info.world_size)
    return True


def destroy_process_group() -> None:
    """Tear down the process group :func:`init_process_group` created."""
    torch_dist.destroy_process_group()


def log_with_rank(info: DistInfo) -> None:
    """Under torchrun, log to stderr with the rank in every line (``rank0 ...``): the ranks share one stream.

    One process (no torchrun) keeps the caller's logging as it is.
    """
    if info.world_size <= 1:
        return
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s rank{info.rank} %(name)s %(message)s",
        force=True,
    )
