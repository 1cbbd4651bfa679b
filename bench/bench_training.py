"""Training throughput of the tiny Cosmos Policy on this machine: VAE encoding per
sample (done once, then cached) and optimizer steps per second.

Run: ``python bench/bench_training.py [--steps N] [--batch-size B] [--threads T]``.
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

from cosmos_policy_ros.model.tiny import make_tiny_checkpoint  # noqa: E402
from cosmos_policy_ros.learning.training import EpisodeDataset, Trainer, TrainSettings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as folder:
        data = write_folder(Path(folder), episodes=2, steps=8)
        checkpoint = make_tiny_checkpoint(0)
        dataset = EpisodeDataset(checkpoint.config, [data])
        trainer = Trainer(checkpoint, dataset, TrainSettings(batch_size=args.batch_size), device=device)
        start = time.perf_counter()
        trainer.encode(list(range(len(dataset))))
        encode_s = (time.perf_counter() - start) / len(dataset)
        trainer.train_step()  # warm up
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        rate = args.steps / (time.perf_counter() - start)
    print(f"tiny model on {device} ({args.threads} threads): VAE encode {encode_s * 1e3:.0f} ms/sample (cached after "
          f"the first epoch); {rate:.1f} steps/s at batch {args.batch_size} ({rate * args.batch_size:.0f} samples/s)")


if __name__ == "__main__":
    main()
