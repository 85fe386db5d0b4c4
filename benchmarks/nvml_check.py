"""Check the NVML energy path on a real GPU: total energy read around ~20 s of work, as Confide reads it.

    .venv/bin/python benchmarks/nvml_check.py [--gpu 0] [--seconds 20]

Prints the joules, the average power and how they were read (NVML total-energy counter, the same
call as CONFIDE_ENERGY__SOURCE=nvml). The work is a torch matmul loop when torch with CUDA is
installed; otherwise the GPU's idle draw is measured. Without an NVIDIA GPU or driver it says so and
exits with status 0: nothing to check here.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable


def load_nvml() -> object | None:
    try:
        import pynvml
    except ImportError:
        print("nvidia-ml-py is not installed (pip install nvidia-ml-py): nothing to check.")
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        print(f"No NVIDIA GPU usable here (NVML: {exc}): nothing to check.")
        return None
    return pynvml


def gpu_work(gpu: int) -> tuple[str, Callable[[], None]]:
    """A step of GPU work, and what it is. Idle when torch with CUDA is not available."""
    try:
        import torch
    except ImportError:
        return "idle (torch is not installed)", lambda: time.sleep(0.1)
    if not torch.cuda.is_available():
        return "idle (torch has no CUDA here)", lambda: time.sleep(0.1)
    # torch numbers devices after CUDA_VISIBLE_DEVICES; NVML does not. Without it set they agree.
    device = torch.device(f"cuda:{gpu}")
    a = torch.randn(8192, 8192, device=device, dtype=torch.float16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.float16)

    def step() -> None:
        for _ in range(10):
            torch.matmul(a, b)
        torch.cuda.synchronize(device)

    return "torch fp16 matmul 8192x8192", step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", type=int, default=0, help="NVML index (as nvidia-smi numbers it)")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()

    nvml = load_nvml()
    if nvml is None:
        return 0
    try:
        count = nvml.nvmlDeviceGetCount()  # type: ignore[attr-defined]
        if args.gpu >= count:
            print(f"GPU {args.gpu} does not exist: NVML sees {count} GPU(s).")
            return 1
        handle = nvml.nvmlDeviceGetHandleByIndex(args.gpu)  # type: ignore[attr-defined]
        name = nvml.nvmlDeviceGetName(handle)  # type: ignore[attr-defined]
        energy = nvml.nvmlDeviceGetTotalEnergyConsumption  # type: ignore[attr-defined]
        what, step = gpu_work(args.gpu)
        step()  # warm-up outside the measurement (allocation, kernels)
        before_mj, started = energy(handle), time.monotonic()
        steps = 0
        while time.monotonic() - started < args.seconds:
            step()
            steps += 1
        after_mj, elapsed = energy(handle), time.monotonic() - started
        power_now = nvml.nvmlDeviceGetPowerUsage(handle) / 1000  # type: ignore[attr-defined]
    except nvml.NVMLError as exc:  # type: ignore[attr-defined]
        print(f"NVML could not read total energy on GPU {args.gpu}: {exc} (needs Volta or newer).")
        return 1
    finally:
        nvml.nvmlShutdown()  # type: ignore[attr-defined]
    joules = (after_mj - before_mj) / 1000
    print(f"GPU {args.gpu}: {name}")
    print(f"work: {what}, {steps} steps in {elapsed:.1f} s")
    print("reading: pynvml.nvmlDeviceGetTotalEnergyConsumption (mJ since driver load), before and after")
    print(f"energy: {joules:.1f} J ({joules / 3600:.4f} Wh)")
    print(f"average power: {joules / elapsed:.1f} W (nvmlDeviceGetPowerUsage at the end: {power_now:.1f} W)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
