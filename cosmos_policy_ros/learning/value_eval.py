"""`cosmos-policy-ros value-eval`: how well a planning checkpoint's world model and value
function predict held-out rollouts, against a baseline checkpoint (the policy checkpoint's
own world model + value head). No ROS.

At every chunk boundary of every rollout episode (as the policy would have asked: steps 0,
chunk, 2 chunk, ... at the checkpoint's rate) the checkpoint gets the recorded observation
and the chunk that was executed next, and predicts the state after it and its value with
the planner's ensemble (default 3 future x 5 value samples, majority mean: what best-of-N
ranks candidates by). Measured:

- value AUROC against the episode's outcome, over every (episode, chunk) point and over
  episodes (mean predicted value per episode): 0.5 is chance, 1 ranks every success above
  every failure; undefined (null) when the rollouts hold only one outcome;
- value MAE against the dataset's value targets (discounted return);
- future-proprio L1 (rad) of the world model against the recorded state after the chunk,
  and the "no change" baseline (the state before it).

Writes JSON (``--out``) and prints a table. The rollouts must not be the ones the planning
model was trained on: collect them from their own seeds (``collect-rollouts --seed 300000``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cosmos_policy_ros.config import DEFAULT_SUCCESS_THRESHOLD, PLANNING_AGGREGATIONS
from cosmos_policy_ros.learning.episodes import EpisodeFormatError, read_episode
from cosmos_policy_ros.types import Observation

LOG = "[value-eval]"


def auroc(scores, labels) -> float | None:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann-Whitney U, ties
    counted half); None when the labels hold one class only."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):  # average ranks over ties
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    u = ranks[labels].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


@dataclass(frozen=True)
class RolloutPoint:
    """One chunk boundary of a rollout: what the model sees and what happened next."""

    episode: int
    success: bool
    observation: Observation
    actions: np.ndarray  # [chunk_size, dof] executed, robot units
    future_joint_positions: np.ndarray  # [dof] recorded after the chunk
    value_target: float  # the dataset's value at the future step


def rollout_points(data_dir: str | Path, camera_names, chunk_size: int, control_rate_hz: float,
                   task: str = "") -> list[RolloutPoint]:
    """Every chunk boundary of every ``episode_*.hdf5`` in ``data_dir`` (episodes must carry
    their outcome and value targets: ``bags-to-dataset`` / ``collect-rollouts`` output)."""
    files = sorted(Path(data_dir).glob("episode_*.hdf5"), key=lambda p: int(p.stem.split("_")[-1]))
    if not files:
        raise EpisodeFormatError(f"{data_dir}: no episode_*.hdf5 files (collect-rollouts / bags-to-dataset output)")
    points = []
    for index, path in enumerate(files):
        episode = read_episode(path, cameras=tuple(camera_names))
        if episode.success is None or episode.value is None:
            raise EpisodeFormatError(f"{path}: rollout without outcome or /value targets; convert labelled bags "
                                     "with `cosmos-policy-ros bags-to-dataset`")
        ratio = max(1, round(float(episode.control_rate_hz or control_rate_hz) / control_rate_hz))
        last = episode.num_steps - 1
        for t in range(0, last, chunk_size * ratio):
            future = min(t + chunk_size * ratio, last)
            steps = np.minimum(t + np.arange(chunk_size) * ratio, last)
            images = {cam: np.asarray(episode.frame(cam, t)) for cam in camera_names}
            points.append(RolloutPoint(
                episode=index, success=bool(episode.success),
                observation=Observation(stamp_ns=0, images=images, joint_positions=episode.qpos[t],
                                        task=task or episode.task),
                actions=episode.action[steps], future_joint_positions=episode.qpos[future],
                value_target=float(episode.value[future])))
        episode.close()
    return points


def evaluate_checkpoint(model, points: list[RolloutPoint], num_future_samples: int = 3, num_value_samples: int = 5,
                        aggregation: str = "majority_mean", seed: int = 0, ensemble_steps: str = "linspace",
                        progress=None) -> dict:
    """The metrics of the module docstring for one model (a ``CosmosPolicy``)."""
    from cosmos_policy_ros.control.planning import aggregate_values

    values, targets, wm_l1, still_l1, labels, episodes = [], [], [], [], [], []
    started = time.perf_counter()
    for k, point in enumerate(points):
        observation = point.observation
        if not observation.task:
            observation = Observation(stamp_ns=0, images=observation.images,
                                      joint_positions=observation.joint_positions,
                                      task=model.config.default_task)
        prediction = model.predict_outcomes(observation, point.actions[None], num_future_samples,
                                            num_value_samples, seed=seed, ensemble_steps=ensemble_steps)
        values.append(float(aggregate_values(prediction.values, aggregation, DEFAULT_SUCCESS_THRESHOLD)[0]))
        targets.append(point.value_target)
        wm_l1.append(float(np.abs(prediction.future_joint_positions[0] - point.future_joint_positions).mean()))
        still_l1.append(float(np.abs(point.observation.joint_positions - point.future_joint_positions).mean()))
        labels.append(point.success)
        episodes.append(point.episode)
        if progress and (k + 1) % 20 == 0:
            progress(f"{LOG} {k + 1}/{len(points)} points ({time.perf_counter() - started:.0f} s)")
    values_arr, labels_arr, episodes_arr = np.array(values), np.array(labels), np.array(episodes)
    per_episode = sorted(set(episodes))
    episode_values = [float(values_arr[episodes_arr == e].mean()) for e in per_episode]
    episode_labels = [bool(labels_arr[episodes_arr == e][0]) for e in per_episode]
    return {
        "points": len(points), "episodes": len(per_episode), "successes": int(sum(episode_labels)),
        "value_auroc_points": auroc(values_arr, labels_arr),
        "value_auroc_episodes": auroc(episode_values, episode_labels),
        "value_mae": float(np.mean(np.abs(values_arr - np.array(targets)))),
        "mean_value_successes": float(values_arr[labels_arr].mean()) if labels_arr.any() else None,
        "mean_value_failures": float(values_arr[~labels_arr].mean()) if (~labels_arr).any() else None,
        "future_proprio_l1": float(np.mean(wm_l1)), "no_change_l1": float(np.mean(still_l1)),
        "world_model_ratio": float(np.mean(wm_l1) / max(np.mean(still_l1), 1e-12)),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def format_table(report: dict) -> str:
    def num(value, fmt=".3f"):
        return "-" if value is None else format(value, fmt)

    rows = [(f"{'checkpoint':<10} {'AUROC pts':>9} {'AUROC eps':>9} {'value MAE':>9} {'future L1':>9} "
             f"{'no-change L1':>12}")]
    for name, m in report["checkpoints"].items():
        rows.append(f"{name:<10} {num(m['value_auroc_points']):>9} {num(m['value_auroc_episodes']):>9} "
                    f"{num(m['value_mae']):>9} {num(m['future_proprio_l1']):>9} {num(m['no_change_l1']):>12}")
    first = next(iter(report["checkpoints"].values()))
    rows.append(f"{first['points']} points of {first['episodes']} held-out episodes ({first['successes']} successes)")
    return "\n".join(rows)


def _episode_ids(dataset: Path) -> set[str]:
    try:
        info = json.loads((dataset / "dataset_info.json").read_text())
    except (OSError, ValueError):
        return set()
    return {str(e.get("episode_id")) for e in info.get("episodes", [])}


def training_overlap(checkpoint: str | Path, rollouts: str | Path) -> list[str]:
    """Episode ids of ``rollouts`` that the planning checkpoint was fine-tuned on (from the
    ``recipe.json`` that ``embedded-planning-model`` writes); [] when unknown or disjoint."""
    try:
        recipe = json.loads((Path(checkpoint) / "recipe.json").read_text())
    except (OSError, ValueError):
        return []
    trained_on = recipe.get("rollouts") if isinstance(recipe, dict) else None
    if not trained_on:
        return []
    return sorted(_episode_ids(Path(trained_on)) & _episode_ids(Path(rollouts)))


def value_eval(checkpoints: dict[str, str], rollouts: str | Path, num_future_samples: int = 3,
               num_value_samples: int = 5, aggregation: str = "majority_mean", seed: int = 0,
               ensemble_steps: str = "linspace", progress=print) -> dict:
    """``checkpoints``: name -> folder (e.g. planning, baseline), evaluated on the same points.
    Every checkpoint must see the same cameras at the same chunk size and rate."""
    from cosmos_policy_ros.model.cosmos_policy import CosmosPolicy

    models = {name: CosmosPolicy.from_pretrained(folder, device="cpu", decode_future_images=False)
              for name, folder in checkpoints.items()}
    keys = {name: (tuple(m.config.camera_names), m.config.chunk_size, m.config.control_rate_hz)
            for name, m in models.items()}
    if len(set(keys.values())) > 1:
        raise ValueError(f"checkpoints differ in cameras / chunk size / rate: {keys}; evaluate them separately")
    cameras, chunk, rate = next(iter(keys.values()))
    points = rollout_points(rollouts, cameras, chunk, rate)
    report = {"rollouts": str(rollouts), "settings": {
        "num_future_samples": num_future_samples, "num_value_samples": num_value_samples,
        "aggregation": aggregation, "seed": seed, "ensemble_steps": ensemble_steps},
        "checkpoints": {}, "checkpoint_paths": {k: str(v) for k, v in checkpoints.items()}}
    for name, folder in checkpoints.items():
        seen = training_overlap(folder, rollouts)
        if seen:
            report.setdefault("not_held_out", {})[name] = seen
            progress(f"{LOG} warning: {name} ({folder}) was fine-tuned on {len(seen)} of these episodes "
                     f"({', '.join(seen[:3])}{', ...' if len(seen) > 3 else ''}); they are not held out")
    for name, model in models.items():
        progress(f"{LOG} {name}: {checkpoints[name]} on {len(points)} points")
        report["checkpoints"][name] = evaluate_checkpoint(model, points, num_future_samples, num_value_samples,
                                                          aggregation, seed, ensemble_steps, progress)
    return report


def add_value_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="planning checkpoint folder")
    parser.add_argument("--baseline", default="",
                        help="baseline checkpoint, e.g. the policy checkpoint the planning model was tuned from")
    parser.add_argument("--rollouts", required=True, help="held-out rollout dataset (collect-rollouts .../dataset)")
    parser.add_argument("--future-samples", type=int, default=3, help="world-model samples per point (official 3)")
    parser.add_argument("--value-samples", type=int, default=5, help="value samples per future (official 5)")
    parser.add_argument("--aggregation", choices=PLANNING_AGGREGATIONS, default="majority_mean")
    parser.add_argument("--ensemble-steps", choices=("linspace", "full"), default="linspace")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="JSON file for the report")


def run_value_eval(args: argparse.Namespace) -> int:
    from cosmos_policy_ros.model.checkpoint import CheckpointError

    checkpoints = {"planning": args.checkpoint}
    if args.baseline:
        checkpoints["baseline"] = args.baseline
    try:
        report = value_eval(checkpoints, args.rollouts, args.future_samples, args.value_samples, args.aggregation,
                            args.seed, args.ensemble_steps, progress=lambda line: print(line, flush=True))
    except (EpisodeFormatError, CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"{LOG} error: {err}", file=sys.stderr)
        return 2
    print(format_table(report))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(f"{LOG} wrote {args.out}")
    return 0
