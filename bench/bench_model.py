"""CPU time per action chunk for the tiny Cosmos Policy, split by stage.

Stages: preprocessing (crop/resize), VAE encode, denoising steps (policy mode), VAE
decode of the future images; plus the batched planner calls. ROS overhead is measured
by the node benchmarks, not here. Run: ``python bench/bench_model.py [--repeats N]``.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from cosmos_policy_ros.model.cosmos_policy import CosmosPolicy
from cosmos_policy_ros.model.tiny import TINY_TASKS, build_tiny_checkpoint
from cosmos_policy_ros.types import Observation

STAGES = ("preprocess", "vae_encode", "denoise", "decode")


def make_observation(seed: int) -> Observation:
    rng = np.random.default_rng(seed)
    images = {cam: rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for cam in ("cam_high", "cam_left_wrist", "cam_right_wrist")}
    return Observation(stamp_ns=0, images=images, joint_positions=rng.uniform(-0.3, 0.3, 14), task=TINY_TASKS[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        build_tiny_checkpoint(folder, seed=0)
        policy = CosmosPolicy.from_pretrained(folder, device="cpu")
    obs = make_observation(0)
    policy.infer(obs)  # warm up
    rows: dict[str, list[float]] = {stage: [] for stage in (*STAGES, "total")}
    for _ in range(args.repeats):
        start = time.perf_counter()
        policy.infer(obs)
        wall = time.perf_counter() - start
        for stage in STAGES:
            rows[stage].append(policy.last_timings.get(stage, 0.0))
        rows["total"].append(wall)
    steps = policy.config.num_steps["policy"]
    total = statistics.median(rows["total"])
    print(f"tiny Cosmos Policy, CPU, {args.threads} threads, {args.repeats} chunks "
          f"(chunk {policy.config.chunk_size} x {policy.config.dof}, {steps} denoising steps, "
          f"{policy.config.image_size}px images)")
    print(f"{'stage':<22}{'median ms':>10}{'share':>8}")
    for stage in (*STAGES, "total"):
        median = statistics.median(rows[stage]) * 1e3
        print(f"{stage:<22}{median:>10.1f}{median / (total * 1e3):>8.0%}")
    print(f"{'per denoising step':<22}{statistics.median(rows['denoise']) / steps * 1e3:>10.1f}")
    print(f"chunk rate {1 / total:.1f} Hz; chunk covers {policy.config.chunk_size / policy.config.control_rate_hz:.1f} s "
          f"of control at {policy.config.control_rate_hz:g} Hz")

    policy.decode_future_images = False
    start = time.perf_counter()
    for _ in range(args.repeats):
        policy.infer(obs)
    print(f"without future-image decode: {(time.perf_counter() - start) / args.repeats * 1e3:.1f} ms per chunk")

    encoded = policy.encode_observation(obs)
    start = time.perf_counter()
    candidates = policy.sample_candidates(encoded, num_candidates=8, seed=1)
    t_cand = time.perf_counter() - start
    chunks = np.stack([c.actions for c in candidates])
    start = time.perf_counter()
    policy.predict_outcomes(encoded, chunks, num_future_samples=3, num_value_samples=5, seed=2)
    t_out = time.perf_counter() - start
    print(f"planner: sample_candidates(8) {t_cand * 1e3:.0f} ms, "
          f"predict_outcomes(8 x 3 futures x 5 values) {t_out * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
