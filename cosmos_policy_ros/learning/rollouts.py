"""`cosmos-policy-ros collect-rollouts`: a policy's rollouts through the full ROS graph, with
the recorder on, labelled by the sim, converted to a training dataset for the planning model.

One command: sim_node -> policy_node -> chunk_executor_node -> sim_node in eval mode (sim
time stops while the policy computes, so a CPU gives the outcomes a GPU would) plus
recorder_node, one MCAP bag per episode under ``<out>/bags/``. The sim labels every bag
(outcome.yaml: success, and the max reward in the note); a bag whose label is missing is
labelled from the sim's results file, loudly. Then ``bags-to-dataset`` writes
``<out>/dataset/`` (ALOHA HDF5 with value targets; the checkpoint's cameras, lzf), skipping
bags that cannot be converted (each reported, listed in ``dataset_info.json``).

Seeds: demonstrations use seeds below HELD_OUT_SEED_START (100000), held-out evaluation
seeds from there up to ROLLOUT_SEED_START (200000); rollouts start at 200000, and a seed
range reaching into the held-out eval seeds is refused.

A policy too good to fail teaches the value function nothing about failure:
``--action-noise RAD`` (one Gaussian offset per chunk and arm joint, ``control.action_noise``)
and ``--object-range-scale X`` (the cube's initial x/y ranges scaled about their centre)
perturb collection only. Both are off by default and written to ``dataset_info.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cosmos_policy_ros.learning.evaluation import (
    HELD_OUT_SEED_START,
    ROLLOUT_SEED_START,
)

LOG = "[collect-rollouts]"


def seed_overlap(first_seed: int, episodes: int) -> str:
    """'' when seeds first_seed .. first_seed + episodes - 1 avoid the held-out eval seeds,
    else why not."""
    last = first_seed + episodes - 1
    if first_seed < ROLLOUT_SEED_START and last >= HELD_OUT_SEED_START:
        return (f"seeds {first_seed}-{last} overlap the held-out evaluation seeds "
                f"{HELD_OUT_SEED_START}-{ROLLOUT_SEED_START - 1}; rollouts start at {ROLLOUT_SEED_START}")
    return ""


def _label_bags(bags_dir: Path, results: list[dict], progress) -> list[Path]:
    """The bag of each sim episode, labelled: the recorder wrote the sim's STOP outcome;
    a missing or contradicting label is set from the sim's result (and said so)."""
    from cosmos_policy_ros.recording import label_episode, read_outcome

    bags = []
    for r in results:
        bag = bags_dir / r["episode_id"]
        if not bag.is_dir():
            progress(f"{LOG} seed {r['seed']}: no bag {bag} (recorder missed the episode's start); not in the dataset")
            continue
        note = f"sim seed {r['seed']}: max reward {r['max_reward']}/4"
        try:
            outcome = read_outcome(bag)
        except (KeyError, TypeError, ValueError) as err:
            progress(f"{LOG} {bag}: unreadable outcome.yaml ({err!r}); left for bags-to-dataset to report")
            bags.append(bag)
            continue
        if outcome is None or outcome.success != bool(r["success"]):
            label_episode(bag, bool(r["success"]), note=f"{note} (labelled from the sim's results file)")
            was = "no label" if outcome is None else f"label {'success' if outcome.success else 'failure'}"
            progress(f"{LOG} {bag.name}: {was} in the bag; labelled {'success' if r['success'] else 'failure'} "
                     "from the sim's results file")
        bags.append(bag)
    return bags


def checkpoint_cameras(checkpoint: str) -> list[str] | None:
    """The cameras the checkpoint sees (the dataset keeps only those); None: every camera."""
    from cosmos_policy_ros.model.checkpoint import CONFIG_FILE, PolicyConfig

    path = Path(checkpoint) / CONFIG_FILE
    if not path.is_file():
        return None
    return list(PolicyConfig.from_dict(json.loads(path.read_text()), str(path)).camera_names)


def collect_rollouts(checkpoint: str, episodes: int, first_seed: int, out: str | Path, *, config: str = "aloha",
                     action_noise_rad: float = 0.0, object_range_scale: float = 1.0, noise_seed: int = 0,
                     episode_length_s: float = 0.0, backend: str = "", timeout_s: float = 0.0,
                     progress=print) -> dict:
    """Run, label, convert; returns the summary also written to ``<out>/collection.json``.
    Raises RuntimeError when the graph fails and ValueError for bad arguments."""
    from cosmos_policy_ros.cli import run_demo
    from cosmos_policy_ros.config import load_config
    from cosmos_policy_ros.learning.bag_episode import DatasetConfig
    from cosmos_policy_ros.learning.bags_to_dataset import DatasetError, bags_to_dataset

    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    overlap = seed_overlap(first_seed, episodes)
    if overlap:
        raise ValueError(overlap)
    if first_seed < HELD_OUT_SEED_START:
        progress(f"{LOG} warning: seeds from {first_seed} may repeat demonstration seeds (< {HELD_OUT_SEED_START})")
    out = Path(out)
    bags_dir, dataset_dir = out / "bags", out / "dataset"
    if (out / "collection.json").exists() or (bags_dir.exists() and any(bags_dir.iterdir())):
        raise ValueError(f"{out} holds an earlier collection ({bags_dir} or collection.json); use a new --out")
    out.mkdir(parents=True, exist_ok=True)
    collection = {"action_noise_rad": float(action_noise_rad), "object_range_scale": float(object_range_scale),
                  "noise_seed": int(noise_seed)}
    overrides = {f"collection.{k}": v for k, v in collection.items()}
    # A fresh policy per seed would be the cleanest; one graph for all episodes is what the
    # robot does (the policy node resets at every episode start).
    demo_args = argparse.Namespace(
        config=config, episodes=episodes, seed=first_seed, policy="cosmos", checkpoint=checkpoint, backend=backend,
        planning=False, planning_checkpoint="", episode_length=episode_length_s, record=str(bags_dir),
        out=str(out), timeout=timeout_s, eval_mode=True, overrides=overrides)
    progress(f"{LOG} {episodes} episode(s), seeds {first_seed}-{first_seed + episodes - 1}, checkpoint "
             f"{checkpoint}; action noise {action_noise_rad:g} rad, object range scale {object_range_scale:g}")
    started = time.perf_counter()
    if run_demo(demo_args) != 0:
        raise RuntimeError(f"the rollout graph failed; node logs in {out / 'logs'}")
    run_s = time.perf_counter() - started
    results = json.loads((out / "results.json").read_text())
    bags = _label_bags(bags_dir, results, progress)

    robot = load_config(out / "config.yaml")
    cameras = checkpoint_cameras(checkpoint)
    started = time.perf_counter()
    successes = sum(bool(r["success"]) for r in results)
    info = {"collection": {
        **collection, "checkpoint": str(checkpoint), "first_seed": first_seed, "episodes": episodes,
        "episode_length_s": episode_length_s or robot.sim.episode_length_s, "mode": "eval",
        "results": [{k: r[k] for k in ("episode_id", "seed", "success", "max_reward", "wall_s")} for r in results]}}
    summaries = []
    if bags:
        try:
            summaries = bags_to_dataset(
                bags, dataset_dir, DatasetConfig.from_robot_config(robot, cameras=cameras), invalid="skip",
                hdf5_compression="lzf", progress=False, extra_info=info,
                report=lambda line: progress(f"{LOG} {line}"))
        except DatasetError as err:
            progress(f"{LOG} no dataset written: {err}")
    convert_s = time.perf_counter() - started
    skipped = []
    if (dataset_dir / "dataset_info.json").exists():
        skipped = json.loads((dataset_dir / "dataset_info.json").read_text())["skipped_invalid"]
    summary = {
        "episodes": len(results), "successes": successes, "failures": len(results) - successes,
        "dataset": str(dataset_dir) if summaries else None, "dataset_episodes": len(summaries),
        "dataset_successes": sum(s.success for s in summaries), "skipped_bags": skipped,
        "run_s": round(run_s, 1), "convert_s": round(convert_s, 1), **info["collection"]}
    (out / "collection.json").write_text(json.dumps(summary, indent=2))
    progress(f"{LOG} {successes} successes, {len(results) - successes} failures in {len(results)} episodes "
             f"({run_s:.0f} s); dataset {dataset_dir}: {len(summaries)} episodes "
             f"({summary['dataset_successes']} successes), {len(skipped)} bag(s) skipped; conversion {convert_s:.0f} s")
    if summaries and summary["dataset_successes"] in (0, len(summaries)):
        which = "successes" if summary["dataset_successes"] == 0 else "failures"
        progress(f"{LOG} warning: the dataset holds no {which}; the value function needs both (more episodes, "
                 "--action-noise or --object-range-scale)")
    return summary


def add_collect_rollouts_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="Cosmos policy checkpoint folder")
    parser.add_argument("--episodes", type=int, required=True, help="M seeded episodes")
    parser.add_argument("--seed", type=int, default=ROLLOUT_SEED_START,
                        help=f"first seed (default {ROLLOUT_SEED_START}: disjoint from demonstrations, below "
                             f"{HELD_OUT_SEED_START}, and held-out evaluation, {HELD_OUT_SEED_START}-"
                             f"{ROLLOUT_SEED_START - 1})")
    parser.add_argument("--out", required=True, help="new folder: bags/, dataset/, logs/, collection.json")
    parser.add_argument("--action-noise", type=float, default=0.0, metavar="RAD",
                        help="std of one Gaussian offset per chunk and arm joint (default 0: off)")
    parser.add_argument("--cube-range-scale", "--object-range-scale", dest="object_range_scale", type=float,
                        default=1.0, metavar="X", help="scale the initial cube x/y ranges about their centre "
                                                       "(default 1: gym-aloha's ranges)")
    parser.add_argument("--noise-seed", type=int, default=0, help="seed of the action noise (default 0)")
    parser.add_argument("--config", default="aloha", help="robot YAML (path or name in config/)")
    parser.add_argument("--backend", default="", help="torch | onnx")
    parser.add_argument("--episode-length", type=float, default=0.0, help="sim seconds per episode (default: config)")
    parser.add_argument("--timeout", type=float, default=0.0, help="give up after this many seconds")


def run_collect_rollouts(args: argparse.Namespace) -> int:
    try:
        summary = collect_rollouts(
            args.checkpoint, args.episodes, args.seed, args.out, config=args.config,
            action_noise_rad=args.action_noise, object_range_scale=args.object_range_scale,
            noise_seed=args.noise_seed, episode_length_s=args.episode_length, backend=args.backend,
            timeout_s=args.timeout, progress=lambda line: print(line, flush=True))
    except (ValueError, RuntimeError, OSError) as err:
        print(f"{LOG} error: {err}", file=sys.stderr)
        return 2
    return 0 if summary["dataset"] else 1
