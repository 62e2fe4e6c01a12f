"""Speed of the Semantic-driven Colorization U-Net at paper width: 352x352, batch 1, CPU, fp32.

Prints ms per image and the achieved GFLOP/s (FLOPs = 2 x multiply-accumulates of every convolution,
counted by ``torch.utils.flop_counter.FlopCounterMode`` and checked against an analytic count), next to a
plain fp32 2048^3 matmul's GFLOP/s measured in the same run (the machine's practical peak). The eager
model is the baseline; faster execution paths of the SAME function are tried and each must match the
eager output to 1e-4 before it is timed: ``default``, what ``semcolor colorize`` and ``semcolor edit`` run
(``semcolor.models.sdc.FastUNetInference``: oneDNN convolutions with prepacked weights and fused
LeakyReLU, no compilation), and for comparison inference mode, channels-last, TorchScript freezing with
oneDNN fusion and torch.compile with frozen weights. ``ms_per_image`` / ``efficiency`` are the DEFAULT
path's (the aim: efficiency >= 0.75); ``best_path`` names the fastest of all. Timings are the minimum over
interleaved rounds: on a shared machine the minimum is the least disturbed measurement.

The public release runs at about 100 GFLOP/s on this project's 2-core machines against a 170 GFLOP/s
matmul (REFERENCE.md section 2), i.e. at 0.59 of the matmul's rate; compare ``efficiency`` with that.

Usage: python bench/unet.py [--threads 2] [--rounds 3] [--no-compile] [--size 352]
Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from semcolor.models import create_model
from semcolor.models.sdc import FastUNetInference, SemanticDrivenUNet

TOLERANCE = 1e-4  # max |difference| in ab (scaled to [-1, 1]) allowed for an optimized path


def analytic_flops(model: nn.Module, *inputs: torch.Tensor) -> int:
    """2 x MACs of every Conv2d / ConvTranspose2d, from the shapes seen in one forward pass."""
    total = 0

    def count(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        if isinstance(module, nn.ConvTranspose2d):  # every input pixel scatters a full kernel
            positions = args[0].shape[0] * args[0].shape[2] * args[0].shape[3]
        else:
            positions = output.shape[0] * output.shape[2] * output.shape[3]
        total += 2 * positions * module.in_channels * module.out_channels * kh * kw // module.groups

    handles = [m.register_forward_hook(count) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return total


def counted_flops(model: nn.Module, *inputs: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*inputs)
    return counter.get_total_flops()


def matmul_gflops(size: int, rounds: int) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = min(_time(lambda: a @ b) for _ in range(rounds + 2))
    return 2 * size**3 / best / 1e9


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def build_paths(model: SemanticDrivenUNet, L: torch.Tensor, seg: torch.Tensor, compile_model: bool
                ) -> dict[str, Callable[[], torch.Tensor]]:
    """Name -> zero-argument callable computing the model's output, one per execution path."""
    paths: dict[str, Callable[[], torch.Tensor]] = {}

    def eager() -> torch.Tensor:
        with torch.no_grad():
            return model(L, seg)

    paths["eager"] = eager
    fast = FastUNetInference(model)

    def default() -> torch.Tensor:
        with torch.no_grad():
            return fast(L, seg)

    paths["default"] = default

    def inference() -> torch.Tensor:
        with torch.inference_mode():
            return model(L, seg)

    paths["inference_mode"] = inference

    channels_last = create_model("sdc", **_config(model)).eval()
    channels_last.load_state_dict(model.state_dict())
    channels_last = channels_last.to(memory_format=torch.channels_last)
    L_last = L.contiguous(memory_format=torch.channels_last)

    def inference_channels_last() -> torch.Tensor:
        with torch.inference_mode():
            return channels_last(L_last, seg)

    paths["inference_mode+channels_last"] = inference_channels_last

    with torch.no_grad(), warnings.catch_warnings():
        # the shape checks become constants of the trace: right for this fixed-size benchmark
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(channels_last, (L_last, seg), check_trace=False)
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))

    def torchscript_frozen() -> torch.Tensor:
        with torch.no_grad():
            return frozen(L_last, seg)

    paths["jit.freeze+optimize_for_inference"] = torchscript_frozen

    if compile_model:
        import torch._inductor.config as inductor_config

        # frozen weights let inductor pre-pack them for oneDNN and fuse conv + LeakyReLU / add
        inductor_config.freezing = True
        compiled = torch.compile(channels_last)

        def compiled_path() -> torch.Tensor:
            with torch.no_grad():
                return compiled(L_last, seg)

        paths["torch.compile(freezing)+channels_last"] = compiled_path
    return paths


def _config(model: SemanticDrivenUNet) -> dict:
    from semcolor.config import config_to_dict

    return config_to_dict(model.config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=352)
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to compile)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = create_model("sdc").eval()  # paper width, scalar map encoding, tanh head
    generator = torch.Generator().manual_seed(0)
    L = torch.rand(1, 1, args.size, args.size, generator=generator) * 2 - 1
    seg = torch.randint(0, 60, (1, args.size // 32, args.size // 32), generator=generator)
    seg = seg.repeat_interleave(32, dim=1).repeat_interleave(32, dim=2)  # a blocky map, like a real one

    flops = counted_flops(model, L, seg)
    flops_by_hand = analytic_flops(model, L, seg)
    if abs(flops - flops_by_hand) > 0.01 * flops_by_hand:
        raise SystemExit(f"FlopCounterMode counts {flops} FLOPs, the analytic count {flops_by_hand}")
    parameters = sum(p.numel() for p in model.parameters())
    print(f"U-Net {args.size}x{args.size}: {parameters / 1e6:.2f} M parameters, "
          f"{flops / 1e9:.1f} GFLOP per image (analytic {flops_by_hand / 1e9:.1f}), {args.threads} threads")

    with torch.no_grad():
        reference = model(L, seg)
    paths = build_paths(model, L, seg, compile_model=not args.no_compile)
    for name, fn in list(paths.items()):
        start = time.perf_counter()
        try:
            out = fn()  # warm-up (and compilation)
        except torch._dynamo.exc.TorchDynamoException as error:  # e.g. no C++ compiler on this machine
            if "compile" not in name:
                raise
            print(f"  {name}: skipped, compilation failed: {type(error).__name__}: {str(error)[:200]}")
            del paths[name]
            continue
        fn()
        setup = time.perf_counter() - start
        error = float((out - reference).abs().max())
        print(f"  {name}: warm-up {setup:.1f} s, max |difference from eager| {error:.1e}")
        if not error <= TOLERANCE:
            raise SystemExit(f"{name} computes a different function (max difference {error:.2e})")

    seconds: dict[str, float] = {name: float("inf") for name in paths}
    matmul = 0.0
    for _ in range(args.rounds):  # interleaved so that a burst of load hits every path alike
        matmul = max(matmul, matmul_gflops(args.matmul_size, rounds=1))
        for name, fn in paths.items():
            seconds[name] = min(seconds[name], _time(fn))
    for name, value in seconds.items():
        print(f"  {name}: {value * 1e3:.0f} ms/image, {flops / value / 1e9:.1f} GFLOP/s")
    print(f"  matmul {args.matmul_size}^3 fp32: {matmul:.1f} GFLOP/s")

    best = min(seconds, key=seconds.get)
    gflops = flops / seconds["default"] / 1e9
    eager_gflops = flops / seconds["eager"] / 1e9
    print(json.dumps({
        "ms_per_image": round(seconds["default"] * 1e3, 1),
        "gflops": round(gflops, 1),
        "matmul_gflops": round(matmul, 1),
        "efficiency": round(gflops / matmul, 3),
        "path": "default: semcolor.models.sdc.FastUNetInference",
        "speedup_over_eager": round(seconds["eager"] / seconds["default"], 3),
        "best_path": best,
        "best_efficiency": round(flops / seconds[best] / 1e9 / matmul, 3),
        "efficiency_by_path": {name: round(flops / value / 1e9 / matmul, 3) for name, value in seconds.items()},
        "eager_ms_per_image": round(seconds["eager"] * 1e3, 1),
        "eager_gflops": round(eager_gflops, 1),
        "eager_efficiency": round(eager_gflops / matmul, 3),
        "gflop_per_image": round(flops / 1e9, 2),
        "threads": args.threads,
        "size": args.size,
    }))


if __name__ == "__main__":
    main()
