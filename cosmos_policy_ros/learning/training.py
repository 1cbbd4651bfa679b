"""The ``cosmos-policy-ros train`` command: fine-tune a checkpoint folder on ALOHA HDF5
episodes with the official Cosmos Policy recipe (``learning.trainer``).

``--data`` folders are demonstrations, ``--rollouts`` folders are rollouts with their
outcomes (see ``learning.training_data`` for the official data mix); ``--packed`` reads
both from one ``pack-dataset`` file instead (``learning.packed_dataset``). Defaults follow the
official ALOHA runs: augmentation on, AdamW betas (0.9, 0.99), the two-cycle linear
learning-rate schedule of the policy run (warm-up 2000, decay to 0.3x at 20k, 0.06x
after) or, with ``--rollouts``, of the planning-model run (1500 / 15k). For short runs set
``--warmup-steps`` / ``--decay-steps`` or ``--lr-schedule constant``. ``--grad-accum``
reaches the official global batch of 200 (8 GPUs x 25) on a small machine:
batch-size x processes x grad-accum.

Output: ``--out`` is a normal checkpoint folder written every ``--save-every`` steps and
at the end, plus ``training_log.jsonl``; the training state goes next to it
(``<out>.training_state.pt``); ``--resume`` continues the run.

Multi-GPU: ``torchrun --nproc_per_node=N -m cosmos_policy_ros.cli train ...``
(``WORLD_SIZE > 1`` switches on ``torch.distributed`` + DDP); ``--batch-size`` is per process.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from cosmos_policy_ros.learning.schedule import (
    PLANNING_SCHEDULE,
    POLICY_SCHEDULE,
    LinearWarmupDecaySchedule,
)
from cosmos_policy_ros.learning.trainer import (
    LOG_FILE,
    NoiseConfig,
    StepResult,
    Trainer,
    TrainSettings,
    generated_frame_loss,
    training_state_path,
)
from cosmos_policy_ros.learning.training_data import (
    DataMix,
    EpisodeDataset,
    TrainingDataError,
    TrainingSample,
)
from cosmos_policy_ros.learning.packed_dataset import PackedDataset
from cosmos_policy_ros.model.checkpoint import CheckpointError, CosmosCheckpoint
from cosmos_policy_ros.model.layout import MODES
from cosmos_policy_ros.model.normalization import NormalizationStats

__all__ = [
    "DataMix",
    "EpisodeDataset",
    "NoiseConfig",
    "StepResult",
    "TrainSettings",
    "Trainer",
    "TrainingDataError",
    "TrainingSample",
    "add_train_arguments",
    "generated_frame_loss",
    "run_train",
    "training_state_path",
]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default="", help="checkpoint folder to start from (not needed with --resume)")
    parser.add_argument("--data", nargs="+", action="extend", default=[], metavar="DIR",
                        help="demonstration episode folders (policy objective; alone: policy 50%%, world model "
                             "25%%, value 25%%)")
    parser.add_argument("--rollouts", nargs="+", action="extend", default=[], metavar="DIR",
                        help="rollout episode folders (world model 50%%, value 50%%, successes and failures drawn "
                             "50/50: the planning model)")
    parser.add_argument("--packed", default="", metavar="FILE",
                        help="train on a `pack-dataset` file instead of --data/--rollouts folders")
    parser.add_argument("--demo-fraction", type=float, default=None,
                        help="share of demonstration samples (default: 0.1 with --rollouts, the official planning "
                             "mix; 0.5 without, where demonstrations also count as success rollouts)")
    parser.add_argument("--out", required=True, help="checkpoint folder to write (training state goes next to it)")
    parser.add_argument("--steps", type=int, default=1000, help="total optimizer steps (default 1000)")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per micro-batch and process (default 8)")
    parser.add_argument("--grad-accum", type=int, default=1,
                        help="micro-batches per optimizer step (official global batch: batch x processes x "
                             "grad-accum = 200; default 1)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4, the official recipe)")
    parser.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (default 0.1)")
    parser.add_argument("--lr-schedule", choices=("official", "constant"), default="official",
                        help="official: linear warm-up, linear decay to 0.3x, then 0.06x (default); constant: --lr")
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help=f"warm-up steps (default {POLICY_SCHEDULE.warmup_steps}, with --rollouts "
                             f"{PLANNING_SCHEDULE.warmup_steps})")
    parser.add_argument("--decay-steps", type=int, default=None,
                        help=f"step where the decay reaches 0.3x; 0.06x after (default {POLICY_SCHEDULE.decay_steps}, "
                             f"with --rollouts {PLANNING_SCHEDULE.decay_steps})")
    parser.add_argument("--no-augment", action="store_true",
                        help="no image augmentation: center crop, each sample encoded once (fast, not the official "
                             "recipe)")
    parser.add_argument("--augment-variants", type=int, default=0, metavar="K",
                        help="cache K augmented encodings per sample instead of encoding a fresh augmentation "
                             "every time (default 0: fresh)")
    parser.add_argument("--grad-clip", type=float, default=1.0, help="gradient-norm clip (default 1.0)")
    parser.add_argument("--save-every", type=int, default=500, help="write --out every N steps (default 500; 0: only at the end)")
    parser.add_argument("--log-every", type=int, default=10, help="print per-objective losses every N steps (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of sample order, objectives and noise (default 0)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its saved training state")
    parser.add_argument("--device", default="", help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--precache", action="store_true",
                        help="encode every sample's images into the latent cache before the first step")
    parser.add_argument("--time-budget", type=float, default=0.0, metavar="S",
                        help="fit the run to S seconds from start-up: latents are precached, the rate of the "
                             "next 20 steps sets the step count (at most --steps) and the schedule's decay "
                             "ends there; a resumed run keeps that count")
    parser.add_argument("--task", default="", help="use this task's T5 embedding for every episode")
    parser.add_argument("--stats", choices=("checkpoint", "dataset"), default="checkpoint",
                        help="normalization statistics: keep the checkpoint's (default) or use the first --data/--rollouts "
                             "folder's dataset_statistics.json (saved into --out)")


def _device(args: argparse.Namespace, local_rank: int) -> torch.device:
    if args.device:
        device = torch.device(args.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", local_rank)
        return device
    return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")


def _format_losses(losses: dict[str, float], counts: dict[str, int]) -> str:
    return "  ".join(f"{m} {losses[m]:.4f} [{counts[m]} steps]" if m in losses else f"{m} -" for m in MODES)


def run_train(args: argparse.Namespace) -> int:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(args, local_rank)
    distributed = world_size > 1
    if distributed:
        import torch.distributed as dist

        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        return _train(args, device, rank, world_size)
    except (TrainingDataError, CheckpointError, FileNotFoundError) as err:
        print(f"[train] error: {err}", file=sys.stderr)
        return 2
    finally:
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()


def _schedule(args: argparse.Namespace, planning: bool | None = None) -> LinearWarmupDecaySchedule | None:
    """``planning``: the data holds rollouts (default: ``--rollouts`` was given)."""
    if args.lr_schedule == "constant":
        return None
    preset = PLANNING_SCHEDULE if (bool(args.rollouts) if planning is None else planning) else POLICY_SCHEDULE
    warmup = preset.warmup_steps if args.warmup_steps is None else args.warmup_steps
    decay = preset.decay_steps if args.decay_steps is None else args.decay_steps
    try:
        return LinearWarmupDecaySchedule(warmup_steps=warmup, decay_steps=decay)
    except ValueError as err:
        raise TrainingDataError(f"--warmup-steps / --decay-steps: {err}") from err


def _train(args: argparse.Namespace, device: torch.device, rank: int, world_size: int) -> int:
    launched = time.perf_counter()
    out = Path(args.out)
    if args.time_budget and world_size > 1:
        raise TrainingDataError("--time-budget fits one process's step count; run it without torchrun")
    main_process = rank == 0
    if args.steps < 1 or args.batch_size < 1 or args.grad_accum < 1:
        raise TrainingDataError(f"--steps, --batch-size and --grad-accum must be >= 1 (got {args.steps}, "
                                f"{args.batch_size}, {args.grad_accum})")
    if args.resume:
        if not (out / "cosmos_policy.json").is_file():
            raise FileNotFoundError(f"{out}: no checkpoint folder to resume (run without --resume first)")
        source = out
    elif not args.checkpoint:
        raise TrainingDataError("--checkpoint DIR is required (or --resume to continue the run in --out)")
    else:
        source = Path(args.checkpoint)
        if out.resolve() == source.resolve():
            raise TrainingDataError(f"--out {out} is the --checkpoint folder; write the fine-tuned model elsewhere")
        if (out / "cosmos_policy.json").exists():
            raise TrainingDataError(f"--out {out} already holds a checkpoint; add --resume to continue it or pick a new folder")
    checkpoint = CosmosCheckpoint.from_pretrained(source, device="cpu", dtype=torch.float32)
    if args.packed:
        if args.data or args.rollouts:
            raise TrainingDataError("--packed replaces --data/--rollouts; give one or the other")
        dataset = PackedDataset(checkpoint.config, args.packed, task_override=args.task)
        has_demos = any(e.source == "demo" for e in dataset.episodes)
        has_rollouts = any(e.source == "rollout" for e in dataset.episodes)
    else:
        dataset = EpisodeDataset(checkpoint.config, args.data, args.rollouts, task_override=args.task)
        has_demos, has_rollouts = bool(args.data), bool(args.rollouts)
    if args.stats == "dataset" and not args.resume:
        if args.packed:
            if dataset.statistics is None:
                raise TrainingDataError(f"{args.packed}: the pack holds no dataset_statistics.json; use --stats checkpoint")
            try:
                checkpoint.stats = NormalizationStats.from_dict(dataset.statistics, source=f"{args.packed} statistics")
            except ValueError as err:
                raise TrainingDataError(str(err)) from err
            checkpoint.validate(str(args.packed))
        else:
            folder = Path((args.data or args.rollouts)[0])
            checkpoint.stats = NormalizationStats.load(folder / "dataset_statistics.json")
            checkpoint.validate(str(folder))
    settings = TrainSettings(
        batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr, weight_decay=args.weight_decay,
        grad_clip=args.grad_clip, schedule=_schedule(args, has_rollouts), seed=args.seed, augment=not args.no_augment,
        augment_variants=args.augment_variants,
        mix=DataMix.official(has_demos, has_rollouts, args.demo_fraction),
    )
    trainer = Trainer(checkpoint, dataset, settings, device=device, rank=rank, world_size=world_size)
    if args.resume:
        trainer.load_state(out)
    demos = sum(e.source == "demo" for e in dataset.episodes)
    if main_process:
        print(f"[train] {len(dataset)} samples from {demos} demonstration and {len(dataset.episodes) - demos} rollout "
              f"episodes at {checkpoint.config.control_rate_hz:g} Hz, chunk {checkpoint.config.chunk_size}; "
              f"{world_size} process(es) x batch {args.batch_size} x accumulation {args.grad_accum} on {device}; "
              f"steps {trainer.step} -> {args.steps}; writing {out}", flush=True)
    target = trainer.total_steps or args.steps
    if trainer.step >= target:
        if main_process:
            print(f"[train] already at step {trainer.step} >= {target} steps; nothing to do")
        return 0
    if args.precache or args.time_budget:
        trainer.precache(progress=print if main_process else (lambda _: None))
    fitting = bool(args.time_budget) and trainer.total_steps is None
    log_path = out / LOG_FILE
    window = {m: [0.0, 0.0, 0] for m in MODES}
    started, window_start = time.perf_counter(), trainer.step
    # the rate of 20 steps after 5 warm-up steps (allocator, kernel autotuning) sets the count
    fit_from = (trainer.step + 5, None)
    bar = tqdm(total=target, initial=trainer.step, desc="train", unit="step", disable=not main_process or not sys.stderr.isatty())
    while trainer.step < target:
        result = trainer.train_step()
        bar.update(1)
        if fitting and result.step == fit_from[0]:
            fit_from = (result.step, time.perf_counter())
        elif fitting and result.step - fit_from[0] == 20:
            fitting = False
            now = time.perf_counter()
            rate = 20 / (now - fit_from[1])
            left = args.time_budget - (now - launched) - 15.0  # the final save
            target = trainer.fit_total_steps(max(result.step, min(args.steps, int(result.step + rate * left))))
            bar.total = target
            if main_process:
                tqdm.write(f"[train] {rate:.2f} steps/s: {target} steps fit the {args.time_budget:.0f} s budget "
                           f"(schedule decay ends at step {target})")
        for m, (s, c) in result.objective_sums.items():
            window[m][0] += s
            window[m][1] += c
            window[m][2] += int(c > 0)
        bar.set_postfix(loss=f"{result.loss:.4f}")
        last = result.step == target
        if main_process and (result.step % max(args.log_every, 1) == 0 or last):
            losses = {m: w[0] / w[1] for m, w in window.items() if w[1] > 0}
            counts = {m: w[2] for m, w in window.items()}
            rate = (result.step - window_start) / max(time.perf_counter() - started, 1e-9)
            tqdm.write(f"[train] step {result.step}/{target}  loss {result.loss:.4f}  "
                       f"{_format_losses(losses, counts)}  lr {result.lr:.2e}  {rate:.2f} steps/s")
            out.mkdir(parents=True, exist_ok=True)
            with log_path.open("a") as log:
                log.write(json.dumps({"step": result.step, "loss": result.loss, "objectives": losses,
                                      "grad_norm": result.grad_norm, "lr": result.lr}) + "\n")
            window = {m: [0.0, 0.0, 0] for m in MODES}
            started, window_start = time.perf_counter(), result.step
        if main_process and (last or (args.save_every > 0 and result.step % args.save_every == 0)):
            trainer.save(out)
            tqdm.write(f"[train] step {result.step}: saved {out} (training state {training_state_path(out)})")
    bar.close()
    dataset.close()
    return 0
