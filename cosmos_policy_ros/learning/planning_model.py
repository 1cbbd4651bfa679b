"""Rebuild the embedded planning checkpoint: the policy checkpoint fine-tuned on
demonstrations + its own rollouts with the rollout objective (world model + value), as the
paper builds its planning model.

Stages, each written into ``--work`` and skipped when complete, so a stopped run continues:

1. demonstrations: ``--demos DIR`` (e.g. ``out/embedded_model/demos``), else the embedded
   scripted-expert demos are generated like the embedded recipe's (seeds 0 .., the policy's cameras);
2. rollouts: ``--rollouts DIR`` (a ``collect-rollouts`` dataset), else ``collect-rollouts``
   runs the policy through the ROS graph (seeds from 200000, ``--episodes``, optional
   ``--action-noise`` / ``--cube-range-scale``);
3. fine-tune: ``train --checkpoint POLICY --data DEMOS --rollouts ROLLOUTS`` with the
   official planning mix (10 % demonstrations for the policy objective, 90 % rollouts
   drawn 50/50 from successes and failures, each world model or value 50/50); resumes from
   its saved training state (``train --resume``);
4. ``--out`` gets the trained checkpoint plus ``recipe.json`` (recipe, inputs, the
   rollouts' seeds and outcome counts, stage times).

Command line: ``cosmos-policy-ros embedded-planning-model --policy CKPT --out DIR``
(``make embedded-planning-model``). ``--quick`` shrinks every stage to a smoke run.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from cosmos_policy_ros.learning.embedded_model import publish_checkpoint, run_training
from cosmos_policy_ros.learning.rollouts import ROLLOUT_SEED_START

TASK = "transfer the cube"
LOG = "[embedded-planning-model]"


@dataclass(frozen=True)
class PlanningRecipe:
    """Sizes and schedule of the planning fine-tune (defaults: the embedded model's)."""

    seed: int = 0
    demo_episodes: int = 60  # generated when --demos is not given (seeds seed ..)
    demo_length_s: float | None = None  # None: the config's episode length (only successes kept)
    rollout_episodes: int = 50  # collected when --rollouts is not given
    rollout_seed: int = ROLLOUT_SEED_START
    rollout_length_s: float = 0.0  # 0: the config's episode length
    action_noise_rad: float = 0.0
    object_range_scale: float = 1.0
    train_steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-4  # the official planning fine-tune's
    warmup_steps: int = 100
    demo_fraction: float = 0.1  # the official planning mix

    @property
    def effective_warmup_steps(self) -> int:
        """The warm-up, shortened to a tenth of a run too short for it."""
        return min(self.warmup_steps, max(1, self.train_steps // 10)) if self.train_steps > 1 else 0

    def quick(self) -> PlanningRecipe:
        """A smoke run: every stage runs, at toy sizes."""
        return replace(self, demo_episodes=2, demo_length_s=2.0, rollout_episodes=2, rollout_length_s=1.5,
                       train_steps=2, batch_size=2, warmup_steps=1)


def _stage(name: str, done: bool, progress) -> bool:
    progress(f"{LOG} {name}: {'done already, skipped' if done else 'running'}")
    return not done


def _dataset_outcomes(folder: Path) -> dict:
    info = json.loads((folder / "dataset_info.json").read_text())
    episodes = info.get("episodes", [])
    return {"episodes": len(episodes), "successes": sum(bool(e.get("success")) for e in episodes),
            "collection": info.get("collection")}


def build_planning_model(policy: str | Path, out_dir: str | Path, work_dir: str | Path,
                         recipe: PlanningRecipe = PlanningRecipe(), demos: str | Path | None = None,
                         rollouts: str | Path | None = None, config: str = "aloha", device: str = "",
                         progress=print) -> Path:
    from cosmos_policy_ros.learning.rollouts import collect_rollouts

    started = time.perf_counter()
    policy = Path(policy)
    if not (policy / "cosmos_policy.json").is_file():
        raise FileNotFoundError(f"--policy {policy}: not a checkpoint folder (no cosmos_policy.json)")
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    trained = work / "trained"
    timings: dict[str, float] = {}

    t = time.perf_counter()
    demos_dir = Path(demos) if demos else work / "demos"
    if demos:
        progress(f"{LOG} demonstrations: given, {demos_dir}")
    elif _stage("demonstrations", (demos_dir / "dataset_info.json").exists(), progress):
        from cosmos_policy_ros.learning.demos import generate_demos
        from cosmos_policy_ros.learning.rollouts import checkpoint_cameras

        shutil.rmtree(demos_dir, ignore_errors=True)
        generate_demos(demos_dir, recipe.demo_episodes, recipe.seed, config, episode_length_s=recipe.demo_length_s,
                       keep_failures=recipe.demo_length_s is not None, cameras=checkpoint_cameras(str(policy)),
                       compression="lzf", progress=progress)
    timings["demos_s"] = time.perf_counter() - t

    t = time.perf_counter()
    rollouts_dir = Path(rollouts) if rollouts else work / "rollouts" / "dataset"
    if rollouts:
        progress(f"{LOG} rollouts: given, {rollouts_dir}")
    elif _stage("rollouts", (work / "rollouts" / "collection.json").exists(), progress):
        shutil.rmtree(work / "rollouts", ignore_errors=True)
        collect_rollouts(str(policy), recipe.rollout_episodes, recipe.rollout_seed, work / "rollouts", config=config,
                         action_noise_rad=recipe.action_noise_rad, object_range_scale=recipe.object_range_scale,
                         episode_length_s=recipe.rollout_length_s, progress=progress)
    if not (rollouts_dir / "dataset_info.json").is_file():
        raise FileNotFoundError(f"{rollouts_dir}: no rollout dataset (dataset_info.json missing); see the "
                                "collect-rollouts output above")
    outcomes = _dataset_outcomes(rollouts_dir)
    if outcomes["successes"] in (0, outcomes["episodes"]):
        progress(f"{LOG} warning: the rollouts hold {outcomes['successes']} successes of {outcomes['episodes']} "
                 "episodes; the value function learns one outcome only")
    timings["rollouts_s"] = time.perf_counter() - t

    t = time.perf_counter()
    done_marker = work / "training_done"
    if _stage("planning fine-tune", done_marker.exists(), progress):
        command = [sys.executable, "-m", "cosmos_policy_ros.cli", "train", "--checkpoint", str(policy),
                   "--data", str(demos_dir), "--rollouts", str(rollouts_dir), "--out", str(trained),
                   "--demo-fraction", str(recipe.demo_fraction), "--steps", str(recipe.train_steps),
                   "--batch-size", str(recipe.batch_size), "--lr", str(recipe.lr), "--lr-schedule", "official",
                   "--warmup-steps", str(recipe.effective_warmup_steps), "--decay-steps", str(recipe.train_steps),
                   "--no-augment", "--task", TASK, "--seed", str(recipe.seed), "--save-every", "250",
                   "--log-every", "25"]
        if device:
            command += ["--device", device]
        run_training(command, trained, done_marker)
    timings["train_s"] = time.perf_counter() - t

    out = publish_checkpoint(trained, out_dir)
    timings["total_s"] = time.perf_counter() - started
    (out / "recipe.json").write_text(json.dumps({
        "kind": "planning model", "recipe": asdict(recipe), "policy": str(policy), "demos": str(demos_dir),
        "rollouts": str(rollouts_dir), "rollout_outcomes": outcomes, "timings_s": timings}, indent=2))
    progress(f"{LOG} wrote {out} in {timings['total_s'] / 60:.1f} min (demos {timings['demos_s']:.0f} s, "
             f"rollouts {timings['rollouts_s']:.0f} s, fine-tune {timings['train_s']:.0f} s)")
    return out


def add_embedded_planning_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", required=True, help="policy checkpoint folder to fine-tune from")
    parser.add_argument("--out", required=True, help="planning checkpoint folder to write")
    parser.add_argument("--work", default="out/embedded_planning_model",
                        help="stage outputs (resumable; default %(default)s)")
    parser.add_argument("--demos", default="", help="demonstration dataset (default: generate into --work)")
    parser.add_argument("--rollouts", default="", help="rollout dataset (default: collect-rollouts into --work)")
    parser.add_argument("--episodes", type=int, default=0, help="rollout episodes to collect (default: recipe's 50)")
    parser.add_argument("--demo-episodes", type=int, default=0,
                        help="demonstrations to generate without --demos (default: recipe's 60)")
    parser.add_argument("--action-noise", type=float, default=0.0, metavar="RAD", help="collection action noise")
    parser.add_argument("--cube-range-scale", "--object-range-scale", dest="object_range_scale", type=float,
                        default=1.0, metavar="X", help="collection cube range scale")
    parser.add_argument("--train-steps", type=int, default=0, help="override the recipe's fine-tune steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="", help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--quick", action="store_true", help="toy sizes: a smoke run of every stage")
    parser.add_argument("--config", default="aloha", help="robot YAML the sim runs with")


def run_embedded_planning_model(args: argparse.Namespace) -> int:
    recipe = PlanningRecipe(seed=args.seed, action_noise_rad=args.action_noise,
                            object_range_scale=args.object_range_scale)
    if args.quick:
        recipe = recipe.quick()
    if args.episodes:
        recipe = replace(recipe, rollout_episodes=args.episodes)
    if args.demo_episodes:
        recipe = replace(recipe, demo_episodes=args.demo_episodes)
    if args.train_steps:
        recipe = replace(recipe, train_steps=args.train_steps)
    try:
        build_planning_model(args.policy, args.out, args.work, recipe, demos=args.demos or None,
                             rollouts=args.rollouts or None, config=args.config, device=args.device,
                             progress=lambda line: print(line, flush=True))
    except (FileNotFoundError, ValueError, RuntimeError, subprocess.CalledProcessError) as err:
        print(f"{LOG} error: {err}", file=sys.stderr)
        return 2
    return 0
