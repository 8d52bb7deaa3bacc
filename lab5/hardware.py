"""What this machine computes well: the device, native bfloat16 (elsewhere bf16 is emulated, and slower
than float32), the resolved ``bf16``/``channels_last`` settings, and glibc's allocator tuned for the CPU."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
from dataclasses import dataclass
from typing import Any

import torch

from lab5.config import AUTO, SWITCH, ConfigError, check_choice

# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) at or above AVX512_CORE_BF16: those under which oneDNN
# may still use the CPU's bf16 instructions. Any lower cap (AVX2, AVX512_CORE, ...) emulates bf16.
_BF16_ISAS = {"AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX10_1_512_AMX",
              "AVX512_CORE_AMX", "AVX10_1_512_AMX_FP16", "AVX512_CORE_AMX_FP16", "ALL", "DEFAULT"}


def resolve_device(name: str) -> torch.device:
    """``auto`` / ``cpu`` / ``cuda`` to a torch device; ``auto``: CUDA when there is one, else the CPU."""
    if name == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config field 'device' is 'cuda' but no CUDA device is available")
    return torch.device(name)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_capability() -> str:
    """The vector ISA ATen dispatches to (``AVX512``, ``AVX2``, ...)."""
    return torch.backends.cpu.get_cpu_capability()


@functools.cache
def native_bf16(device_type: str) -> bool:
    """Whether ``device_type`` ('cpu' or 'cuda') computes bfloat16 in hardware."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device_type != "cpu":
        return False
    # oneDNN says yes on any AVX-512 CPU (it emulates bf16 there); the instructions that make
    # bf16 fast are AVX512_BF16 and AMX, and oneDNN uses them only if its ISA cap allows.
    isa_cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "DEFAULT")).upper()
    has_instructions = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and has_instructions and isa_cap in _BF16_ISAS


@dataclass(frozen=True)
class Precision:
    """The resolved ``bf16`` and ``channels_last`` of a run on one device, and their settings."""
    bf16: bool
    channels_last: bool
    native_bf16: bool
    device: str
    bf16_setting: Any = AUTO
    channels_last_setting: Any = AUTO

    @property
    def reason(self) -> str:
        """Why bf16 is what it is, in a few words."""
        if self.device == "cuda":
            return f"{'' if self.native_bf16 else 'no '}native bf16 on this GPU"
        return ("native bf16 on this CPU: AVX512_BF16/AMX" if self.native_bf16
                else f"bf16 emulated on this CPU: {cpu_capability()}, no AVX512_BF16/AMX in use")

    def describe(self) -> str:
        """``bf16 auto -> off (bf16 emulated on this CPU: ...), channels_last auto -> off``."""
        bf16, cl = ("on" if on else "off" for on in (self.bf16, self.channels_last))
        bf16 = f"bf16 auto -> {bf16} ({self.reason})" if self.bf16_setting == AUTO else f"bf16 {bf16}"
        return f"{bf16}, channels_last {'auto -> ' if self.channels_last_setting == AUTO else ''}{cl}"

    def warning(self) -> str | None:
        """One line when bf16 was asked for explicitly where it is emulated; else None."""
        if self.bf16 and self.bf16_setting is True and not self.native_bf16:
            return (f"warning: bf16=true on a {self.device.upper()} without native bfloat16 ({self.reason}): "
                    "training will be slower than in float32 (bf16=auto picks float32 here)")
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"bf16": self.bf16, "channels_last": self.channels_last, "native_bf16": self.native_bf16,
                "device": self.device, "cpu_capability": cpu_capability(), "cpu_model": cpu_model()}


# Cached, so a config is resolved once per device and process (the workbook's summary and the Solver
# share it); typed, so that 1 (not a switch) is not served True's result.
@functools.lru_cache(maxsize=None, typed=True)
def resolve_precision(bf16: Any, channels_last: Any, device: torch.device | str) -> Precision:
    """The Config's ``bf16`` and ``channels_last`` (each True, False or ``"auto"``) for ``device``: ``bf16`` auto is
    native bfloat16, ``channels_last`` auto is bf16 (in float32 oneDNN's NCHW kernels are the faster ones)."""
    check_choice("bf16", bf16, SWITCH)
    check_choice("channels_last", channels_last, SWITCH)
    device_type = torch.device(device).type
    use_bf16 = native_bf16(device_type) if bf16 == AUTO else bool(bf16)
    use_cl = use_bf16 if channels_last == AUTO else bool(channels_last)
    return Precision(use_bf16, use_cl, native_bf16(device_type), device_type, bf16, channels_last)


_allocator_tuned = False


def tune_cpu_allocator() -> bool:
    """Serve large CPU tensors from glibc's main heap, where freed blocks are reused; whether it applied."""
    # glibc maps each allocation above its mmap threshold as fresh pages, which the kernel zero-fills every
    # time, and a training step allocates gigabytes that way. Raising it, and the trim threshold so the heap
    # is kept between frees, keeps those blocks for reuse.
    global _allocator_tuned
    if _allocator_tuned or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return _allocator_tuned
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    # The threshold first: a glibc that refuses it (older ones cap it at 32 MiB) is left as it was.
    if libc.mallopt(m_mmap_threshold, ctypes.c_int(1 << 30)) == 1:
        _allocator_tuned = libc.mallopt(m_trim_threshold, ctypes.c_int(2**31 - 1)) == 1
    return _allocator_tuned


def trim_cpu_memory() -> None:
    """Return the heap's free memory to the system (after training, in a long-lived kernel)."""
    if _allocator_tuned:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
