"""Training throughput of the tiny Cosmos Policy on this machine, with and without the
official image augmentation: no augmentation (each sample encoded once, cached), a fresh
augmentation encoded on the fly every step, and K cached augmented encodings per sample.

Run: ``python bench/bench_training.py [--steps N] [--batch-size B] [--threads T] [--variants K]``.
Timed steps start after one epoch of warm-up steps, so the cached modes are measured warm.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))

from test_training import write_folder  # noqa: E402  (synthetic ALOHA episodes)

from cosmos_policy_ros.learning.training import EpisodeDataset, Trainer, TrainSettings  # noqa: E402
from cosmos_policy_ros.model.tiny import make_tiny_checkpoint  # noqa: E402


def steps_per_second(data: Path, settings: TrainSettings, steps: int, warmup: int, device: str) -> float:
    checkpoint = make_tiny_checkpoint(0)
    trainer = Trainer(checkpoint, EpisodeDataset(checkpoint.config, [data]), settings, device=device)
    for _ in range(warmup):
        trainer.train_step()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", type=int, default=2, help="K of the cached-augmentation mode")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as folder:
        data = write_folder(Path(folder), episodes=2, steps=4)  # 8 samples: the caches fill quickly
        # Warm-up: enough steps that the cached modes have (nearly) every encoding.
        warmup = max(1, 8 * max(args.variants, 1) // args.batch_size * 2)
        modes = {
            "no augmentation (cached)": TrainSettings(batch_size=args.batch_size, schedule=None, augment=False),
            "augmentation, on the fly": TrainSettings(batch_size=args.batch_size, schedule=None),
            f"augmentation, {args.variants} cached per sample": TrainSettings(
                batch_size=args.batch_size, schedule=None, augment_variants=args.variants),
        }
        for name, settings in modes.items():
            rate = steps_per_second(data, settings, args.steps, 1 if "on the fly" in name else warmup, device)
            print(f"tiny model on {device} ({args.threads} threads), batch {args.batch_size}: {name}: "
                  f"{rate:.2f} steps/s ({rate * args.batch_size:.1f} samples/s)", flush=True)


if __name__ == "__main__":
    main()
