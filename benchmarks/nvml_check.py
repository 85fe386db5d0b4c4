"""Check the NVML energy path on a real GPU: total energy read around ~20 s of work, as Confide reads it.

    .venv/bin/python benchmarks/nvml_check.py [--gpu 0] [--seconds 20]

Prints the joules, the average power and how they were read (NVML total-energy counter, the same
call as CONFIDE_ENERGY__SOURCE=nvml). The work is a torch matmul loop when torch with CUDA is
installed; otherwise the GPU's idle draw is measured. Without an NVIDIA GPU or driver it says so and
exits with status 0: nothing to check here.

Then Confide's own meter (bridge.models.energy: NvmlSource, Energy) runs around two overlapping "answers" on
that GPU while the same work goes on: A for the whole time with 3 tokens per step, B for the second half
with 1 token per step. Their attributed energy must add up to the counter's difference over the same
time (within 3%), and B must get about a quarter of the second half's energy. Exit status 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


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
        torch.cuda.set_device(device)  # steps also run in worker threads, which start without a CUDA context
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
    return asyncio.run(check_confide_meter(args.gpu, args.seconds, step))


async def check_confide_meter(gpu: int, seconds: float, step: Callable[[], None]) -> int:
    """Confide's NVML meter around two overlapping answers, against the raw counter over the same time."""
    from bridge.models.energy import Energy, NvmlSource

    raw = NvmlSource([gpu])  # a second NVML user: the counter read directly, around the meter's answers
    energy = Energy(NvmlSource([gpu]), {"a": [gpu], "b": [gpu]}, interval_s=0.5)
    half = seconds / 2
    before = await raw.read((gpu,))
    started = time.monotonic()
    async with energy.measure("a") as a:
        while time.monotonic() - started < half:
            await asyncio.to_thread(step)
            a.add_tokens(3)
        second_half = await raw.read((gpu,))
        async with energy.measure("b") as b:
            while time.monotonic() - started < seconds:
                await asyncio.to_thread(step)
                a.add_tokens(3)
                b.add_tokens(1)
    after = await raw.read((gpu,))
    await energy.close()
    await raw.close()
    use_a, use_b = a.use, b.use
    if use_a is None or use_b is None:
        print("Confide's meter: a reading failed (see the log above)")
        return 1
    total, late = after - before, after - second_half
    attributed = use_a.joules + use_b.joules
    print(f"Confide's meter (NvmlSource, interval 0.5 s): answer A {use_a.joules:.1f} J over {use_a.seconds:.1f} s")
    print(f"    answer B {use_b.joules:.1f} J over {use_b.seconds:.1f} s (expected about a quarter of {late:.1f} J)")
    print(f"    A + B = {attributed:.1f} J; the counter over the same time: {total:.1f} J")
    sum_ok = abs(attributed - total) <= 0.03 * total
    share_ok = abs(use_b.joules - late / 4) <= 0.1 * late
    print(f"    sum {'matches' if sum_ok else 'does NOT match'}; B's share {'as expected' if share_ok else 'is off'}")
    return 0 if sum_ok and share_ok else 1


if __name__ == "__main__":
    sys.exit(main())
