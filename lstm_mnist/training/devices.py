"""Where and at which precision a run computes: the device a config asks for, the precisions a device can train
at, the autocast context of a precision, and how a run records its device."""
from __future__ import annotations

import torch

from ..config import ConfigError
from ..machine import host


def resolve_device(cfg) -> torch.device:
    """The device a config trains on, checked against its precision."""
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={cfg.device}: no CUDA GPU is visible; use device=auto or device=cpu")
    else:
        device = torch.device(cfg.device)
    check_precision(cfg.precision, device)
    return device


def precisions_of(device: torch.device) -> tuple:
    """The precisions `device` can train at: 32 everywhere; bf16-mixed on a CPU whose oneDNN has bfloat16 (AVX-512
    or newer: native with AVX512-BF16/AMX, emulated on plain AVX-512; an AVX2-only CPU, such as some AMD EPYCs,
    fails to build the LSTM primitive) and on a GPU with bfloat16; 16-mixed on a GPU."""
    if device.type != "cuda":
        return ("32", "bf16-mixed") if cpu_has_bf16() else ("32",)
    with torch.cuda.device(device):  # natively (Ampere on), not in emulation
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    return ("32", *(("bf16-mixed",) if bf16 else ()), "16-mixed")


def cpu_has_bf16() -> bool:
    """Whether this CPU's oneDNN computes in bfloat16 (its LSTM, matmul and convolution primitives need AVX-512)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else True


def autocast(precision: str, device: torch.device, cache: bool = True):
    """The autocast context Lightning's precision plugin opens around a step (none at 32): for plain loops.
    `cache=False` for a step captured in a CUDA graph (the cast weights must be recomputed on every replay)."""
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=cache)


def check_precision(precision: str, device: torch.device) -> None:
    can = precisions_of(device)
    if precision not in can:
        where = (torch.cuda.get_device_name(device) if device.type == "cuda"
                 else "a CPU" if precision == "16-mixed" else "this CPU (without AVX-512, oneDNN has no bfloat16)")
        raise ConfigError(f"precision={precision}: {where} cannot train at it; it can at precision="
                          f"{' or precision='.join(can)}")


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = host.cpu_model()
    return f"cpu ({model}, {torch.get_num_threads()} threads)" if model else f"cpu ({torch.get_num_threads()} threads)"


def threads_of(name: str) -> int | None:
    """The thread count a CPU `device_name` records ("cpu (..., 2 threads)"); None for a GPU or no count."""
    import re

    m = re.search(r"(\d+) threads\)$", name)
    return int(m.group(1)) if name.startswith("cpu") and m else None
