"""Devices: check a device name before anything starts (the CLI's ``--device``, :func:`compress.evaluate`,
the trainer's :func:`~compress.training.distributed.setup`)."""

from __future__ import annotations

import torch

__all__ = ["check_device"]


def check_device(device: str | torch.device, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device``, checked before anything starts: ``cpu``, ``cuda``, ``cuda:N`` or
    ``mps``, and present on this machine. Raises ``ValueError`` (one line, naming ``name``) otherwise."""
    accepted = "accepted: cpu, cuda, cuda:N, mps"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{name} {str(device)!r} is not a device; {accepted}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} {str(device)!r}: torch sees no CUDA GPU on this machine; use cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"{name} {str(device)!r}: this machine has {n} CUDA device(s), cuda:0 to cuda:{n - 1}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{name} {str(device)!r}: torch sees no MPS device on this machine; use cpu")
    elif dev.type != "cpu":
        raise ValueError(f"{name} {str(device)!r}: compress trains on cpu, cuda or mps; {accepted}")
    return dev
