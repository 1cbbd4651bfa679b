"""torch eager vs ONNX Runtime for the tiny Cosmos Policy on this machine's CPU.

Same checkpoint, same inputs, same thread count for both runtimes; torch and ONNX
Runtime calls are interleaved so a busy neighbour slows both alike. Reported (medians):

- per denoising step: one denoiser call at batch 1 (policy-mode inputs);
- per chunk (denoise): the sampler's 10 steps, the ``denoise`` stage of a chunk;
- per chunk (infer): ``policy.infer`` without future-image decoding (preprocess + VAE
  encode in torch for both, then the denoiser under test);
- best-of-N: ``sample_candidates(N=8)`` in one batched call vs 8 calls of N=1.

Times are the best of the repeats (the machine is shared; medians are in the JSON).

The ONNX export comes from ``make_onnx_policy`` (the user cache; exported on the first run).

    python bench/bench_onnx.py [--threads 1] [--repeats 20]
    run_onnx_bench() -> dict          # same numbers, for bench/run_all.py
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosmos_policy_ros.model.cosmos_policy import CosmosPolicy  # noqa: E402
from cosmos_policy_ros.model.tiny import TINY_TASKS  # noqa: E402
from cosmos_policy_ros.model.onnx_backend import example_inputs, make_onnx_policy  # noqa: E402
from cosmos_policy_ros.control.policies import default_checkpoint  # noqa: E402
from cosmos_policy_ros.types import Observation  # noqa: E402

CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")


def make_observation(seed: int = 0, height: int = 480, width: int = 640) -> Observation:
    rng = np.random.default_rng(seed)
    images = {cam: rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for cam in CAMERAS}
    return Observation(stamp_ns=0, images=images, joint_positions=rng.uniform(-0.3, 0.3, 14), task=TINY_TASKS[0])


def interleaved(functions: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, dict[str, float]]:
    """Seconds per call of each function, calls alternating between them: ``best`` (the
    minimum, as ``timeit`` reports: on a shared machine the median measures the
    neighbours' load as much as the code) and ``median``."""
    for _ in range(warmup):
        for fn in functions.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: {"best": min(v), "median": statistics.median(v)} for name, v in times.items()}


def build_policies(checkpoint: str | Path | None = None, threads: int = 1, log=None):
    """(torch policy, ONNX policy, seconds spent getting the ONNX export) on the CPU."""
    checkpoint = Path(checkpoint or default_checkpoint())
    torch.set_num_threads(threads)
    torch_policy = CosmosPolicy.from_pretrained(checkpoint, device="cpu", decode_future_images=False)
    start = time.perf_counter()
    kwargs = {"log": log} if log else {}
    onnx_policy = make_onnx_policy(checkpoint, device="cpu", intra_op_threads=threads, decode_future_images=False,
                                   **kwargs)
    return torch_policy, onnx_policy, time.perf_counter() - start


def run_onnx_bench(checkpoint: str | Path | None = None, threads: int = 1, repeats: int = 20,
                   num_candidates: int = 8, policies=None) -> dict:
    torch_policy, onnx_policy, setup_s = policies or build_policies(checkpoint, threads)
    cfg = torch_policy.config
    steps = cfg.num_steps["policy"]
    obs = make_observation()
    encoded = torch_policy.encode_observation(obs)
    shapes = {name: spec["shape"] for name, spec in onnx_policy.denoiser.metadata["inputs"].items()}
    step_inputs = example_inputs(shapes, batch=1)
    cond = cfg.layout.condition_frames("policy")
    noise = torch.from_numpy(np.random.RandomState(0).standard_normal(tuple(encoded.latents.shape)).astype(np.float32))

    def chunk(policy):
        return lambda: policy.sampler.sample(policy.denoiser, encoded.latents, cond, encoded.text_embedding, steps, noise)

    def sequential(policy):
        return lambda: [policy.sample_candidates(encoded, 1, seed=i) for i in range(num_candidates)]

    with torch.no_grad():
        step = interleaved({"torch": lambda: torch_policy.denoiser(*step_inputs),
                            "onnx": lambda: onnx_policy.denoiser(*step_inputs)}, repeats * 5)
        per_chunk = interleaved({"torch": chunk(torch_policy), "onnx": chunk(onnx_policy)}, repeats)
        infer = interleaved({"torch": lambda: torch_policy.infer(obs), "onnx": lambda: onnx_policy.infer(obs)},
                            max(repeats // 2, 3))
        best_of_n = interleaved({
            "torch_batched": lambda: torch_policy.sample_candidates(encoded, num_candidates, seed=0),
            "torch_sequential": sequential(torch_policy),
            "onnx_batched": lambda: onnx_policy.sample_candidates(encoded, num_candidates, seed=0),
            "onnx_sequential": sequential(onnx_policy),
        }, max(repeats // 4, 3), warmup=1)
        parity = float(np.max(np.abs(chunk(torch_policy)().numpy() - chunk(onnx_policy)().numpy())))
    groups = {"step_ms": step, "chunk_denoise_ms": per_chunk, "chunk_infer_ms": infer, "best_of_n_ms": best_of_n}
    best = {group: {k: v["best"] * 1e3 for k, v in values.items()} for group, values in groups.items()}
    medians = {group: {k: v["median"] * 1e3 for k, v in values.items()} for group, values in groups.items()}
    b = best["best_of_n_ms"]
    return {
        "checkpoint": str(Path(checkpoint or default_checkpoint()).name),
        "threads": threads,
        "provider": onnx_policy.denoiser.provider,
        "onnx_export_or_cache_s": setup_s,
        "denoising_steps": steps,
        "num_candidates": num_candidates,
        **best,
        "speedup": {
            **{group[:-3]: best[group]["torch"] / best[group]["onnx"]
               for group in ("step_ms", "chunk_denoise_ms", "chunk_infer_ms")},
            "best_of_n_batched_vs_sequential_torch": b["torch_sequential"] / b["torch_batched"],
            "best_of_n_batched_vs_sequential_onnx": b["onnx_sequential"] / b["onnx_batched"],
        },
        "chunk_max_abs_diff": parity,
        "medians_ms": medians,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    r = run_onnx_bench(threads=args.threads, repeats=args.repeats)
    print(f"tiny Cosmos Policy, CPU, {r['threads']} threads, ONNX Runtime on {r['provider']}; "
          f"{r['denoising_steps']} denoising steps; chunk |torch - onnx| max {r['chunk_max_abs_diff']:.1e}")
    print(f"best of the repeats (medians in the JSON of bench/run_all.py)\n{'':34}{'torch ms':>10}{'onnx ms':>10}{'speedup':>9}")
    for label, key, speed in (("per denoising step (batch 1)", "step_ms", "step"),
                              ("per chunk, denoise", "chunk_denoise_ms", "chunk_denoise"),
                              ("per chunk, infer (no decode)", "chunk_infer_ms", "chunk_infer")):
        print(f"{label:34}{r[key]['torch']:>10.2f}{r[key]['onnx']:>10.2f}{r['speedup'][speed]:>8.2f}x")
    b = r["best_of_n_ms"]
    for backend in ("torch", "onnx"):
        print(f"best-of-{r['num_candidates']} {backend}: batched {b[f'{backend}_batched']:.1f} ms, sequential "
              f"{b[f'{backend}_sequential']:.1f} ms "
              f"({r['speedup'][f'best_of_n_batched_vs_sequential_{backend}']:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
