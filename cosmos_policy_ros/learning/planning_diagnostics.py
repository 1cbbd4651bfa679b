"""Why best-of-N planning helps or not: what the planner had to choose from, and on what.

``planning-diagnostics`` runs the plain policy on seeded in-process sim episodes (candidate 0,
the policy's own sample, is what executes, so the episodes are the plain policy's) and at
every chunk also samples the N candidates and scores them with the planner, as planner_node
would. Per chunk point it records:

- candidate diversity: mean pairwise L1 between the N candidates' actions (rad, over the
  chunk and the joints) and the spread of their last actions around their mean;
- the planner's values per candidate, their range and the chosen index;
- a control: the same planner scoring N copies of candidate 0. Their values differ only
  through the ensemble's noise seeds (candidate c's members use seeds seed + c + j), so
  their range is what the planner's choice would be with nothing real to choose between.

The summary compares the two value ranges (a planner that ranks candidates by their actions
shows a wider range on real candidates than on copies), counts ties and how often a
candidate other than 0 would have been chosen, and the AUROC of candidate 0's value
against the episode's outcome.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

from cosmos_policy_ros.learning.value_eval import auroc

TIE = 1e-6


def _pair_l1(actions: np.ndarray) -> float:
    pairs = [np.abs(actions[i] - actions[j]).mean() for i, j in itertools.combinations(range(len(actions)), 2)]
    return float(np.mean(pairs)) if pairs else 0.0


class _Probe:
    """Acts as the plain policy (returns candidate 0) and records what a planner would see."""

    def __init__(self, policy, planner, num_candidates: int, control: bool, limits, candidate_noise_rad: float = 0.0,
                 noisy_joints: np.ndarray | None = None, seed: int = 0) -> None:
        self.policy, self.planner, self.limits = policy, planner, limits
        self.num_candidates, self.control = num_candidates, control
        self.noise = float(candidate_noise_rad)
        self.noisy_joints = noisy_joints
        self.rng = np.random.default_rng(seed)
        self.config = policy.config
        self.points: list[dict] = []
        self.seed_now = 0

    def reset(self) -> None:
        self.policy.reset()

    def infer(self, observation):
        from cosmos_policy_ros.control.planning import (
            action_latents,
            clamp_candidates,
            perturb_candidates,
            stack_actions,
        )

        # as the planning client: candidates clamped to the YAML limits before they are scored
        candidates = clamp_candidates(self.policy.sample_candidates(observation, num_candidates=self.num_candidates,
                                                                    seed=self.policy.seed),
                                      self.limits.lower, self.limits.upper)
        if self.noise > 0:  # as planning.candidate_noise_rad: candidates 1.. moved, scored from their chunks
            candidates = clamp_candidates(perturb_candidates(candidates, self.noise, self.noisy_joints, self.rng),
                                          self.limits.lower, self.limits.upper)
        actions = stack_actions(candidates)
        latents = action_latents(candidates)
        encoded = self.planner.encode(observation)
        scores = self.planner.score(encoded, actions, action_latents=latents)
        point = {
            "seed": self.seed_now, "stamp_ns": int(observation.stamp_ns),
            "candidate_pair_l1": _pair_l1(actions),
            "candidate_end_spread": float(np.abs(actions[:, -1] - actions[:, -1].mean(0)).mean()),
            "values": [float(v) for v in scores.candidate_values], "chosen": int(scores.chosen_index),
        }
        if self.control:
            copies = np.repeat(actions[:1], len(actions), axis=0)
            copy_latents = None if latents is None else latents[:1].repeat(len(actions), *[1] * (latents.dim() - 1))
            same = self.planner.score(encoded, copies, action_latents=copy_latents)
            point["copy_values"] = [float(v) for v in same.candidate_values]
        self.points.append(point)
        return candidates[0]


def summarize(points: list[dict], episodes: list[dict]) -> dict:
    outcome = {e["seed"]: bool(e["success"]) for e in episodes}
    values = np.array([p["values"] for p in points])
    value_range = values.max(1) - values.min(1)
    summary = {
        "episodes": len(episodes), "successes": int(sum(outcome.values())), "chunk_points": len(points),
        "candidate_pair_l1_mean": float(np.mean([p["candidate_pair_l1"] for p in points])),
        "candidate_pair_l1_median": float(np.median([p["candidate_pair_l1"] for p in points])),
        "candidate_end_spread_mean": float(np.mean([p["candidate_end_spread"] for p in points])),
        "value_range_mean": float(value_range.mean()),
        "value_tie_fraction": float(np.mean(value_range < TIE)),
        "chosen_other_than_0_fraction": float(np.mean([p["chosen"] != 0 for p in points])),
        "chosen_histogram": {str(k): int(v) for k, v in zip(*np.unique([p["chosen"] for p in points],
                                                                         return_counts=True))},
        "candidate0_value_auroc": auroc(values[:, 0], [outcome[p["seed"]] for p in points]),
    }
    if points and "copy_values" in points[0]:
        copies = np.array([p["copy_values"] for p in points])
        copy_range = copies.max(1) - copies.min(1)
        summary["copy_value_range_mean"] = float(copy_range.mean())
        summary["copy_value_tie_fraction"] = float(np.mean(copy_range < TIE))
        summary["real_range_above_copy_fraction"] = float(np.mean(value_range > copy_range + TIE))
        # candidate c and copy c share their ensemble seeds: the difference is the action's effect
        effect = (values - copies)[:, 1:]
        summary["action_effect_mean"] = float(effect.mean())
        summary["action_effect_abs_mean"] = float(np.abs(effect).mean())
    return summary


def diagnose(policy, planner, seeds: list[int], num_candidates: int = 8, control: bool = True,
             config=None, episode_length_s: float | None = None, progress=print,
             candidate_noise_rad: float = 0.0) -> dict:
    """Run the episodes; returns {"episodes", "points", "summary"}. ``candidate_noise_rad``:
    perturb candidates 1.. with one Gaussian offset per arm joint (as `collect-rollouts
    --action-noise`), to see whether the planner tells worse chunks from candidate 0."""
    from cosmos_policy_ros.config import load_config
    from cosmos_policy_ros.control.safety import JointLimits
    from cosmos_policy_ros.learning.offline_eval import closed_loop

    config = config or load_config("aloha")
    if tuple(policy.config.joint_names) != tuple(config.joint_names):
        raise ValueError(f"the policy's joints {list(policy.config.joint_names)} differ from {config.path}'s "
                         f"{list(config.joint_names)}")
    noisy = np.array([name not in config.gripper_joints for name in config.joint_names])
    probe = _Probe(policy, planner, num_candidates, control, JointLimits.from_robot_config(config),
                   candidate_noise_rad, noisy, seed=seeds[0] if seeds else 0)
    episodes = []
    for seed in seeds:
        probe.seed_now = seed
        episodes += closed_loop(probe, [seed], config, episode_length_s, progress=progress)
    return {"episodes": episodes, "points": probe.points, "summary": summarize(probe.points, episodes)}


def add_planning_diagnostics_arguments(parser: argparse.ArgumentParser) -> None:
    from cosmos_policy_ros.learning.offline_eval import HELD_OUT_SEED_START

    parser.add_argument("--checkpoint", required=True, help="the policy checkpoint (samples the candidates)")
    parser.add_argument("--planning-checkpoint", default="",
                        help="the planning model (default: the policy checkpoint's own world model + value)")
    parser.add_argument("--episodes", type=int, default=6, help="in-process sim episodes (default 6)")
    parser.add_argument("--first-seed", type=int, default=HELD_OUT_SEED_START,
                        help=f"seed of the first episode (default {HELD_OUT_SEED_START})")
    parser.add_argument("--candidates", type=int, default=8, help="N, candidates per chunk (default 8)")
    parser.add_argument("--future-samples", type=int, default=3, help="world-model samples per candidate (default 3)")
    parser.add_argument("--value-samples", type=int, default=5, help="value samples per future (default 5)")
    parser.add_argument("--no-control", action="store_true", help="skip scoring N copies of candidate 0")
    parser.add_argument("--candidate-noise", type=float, default=0.0, metavar="RAD",
                        help="perturb candidates 1.. by one Gaussian offset per arm joint (std RAD): does the "
                             "planner rank worse chunks below candidate 0? (default 0: the policy's own samples)")
    parser.add_argument("--episode-length", type=float, default=0.0, help="sim seconds (default: the config's)")
    parser.add_argument("--out", default="", help="JSON file for every chunk point and the summary")


def run_planning_diagnostics(args: argparse.Namespace) -> int:
    import torch

    from cosmos_policy_ros.control.planning import ModelPlanner
    from cosmos_policy_ros.model.checkpoint import CheckpointError
    from cosmos_policy_ros.model.cosmos_policy import CosmosPolicy

    if args.episodes < 1 or args.candidates < 2:
        print("[planning-diagnostics] error: need --episodes >= 1 and --candidates >= 2", file=sys.stderr)
        return 2
    started = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        policy = CosmosPolicy.from_pretrained(args.checkpoint, device="cpu", decode_future_images=False)
        model = policy if not args.planning_checkpoint else CosmosPolicy.from_pretrained(
            args.planning_checkpoint, device="cpu", decode_future_images=False)
    except (CheckpointError, FileNotFoundError) as err:
        print(f"[planning-diagnostics] error: {err}", file=sys.stderr)
        return 2
    planner = ModelPlanner(model, args.future_samples, args.value_samples)
    seeds = list(range(args.first_seed, args.first_seed + args.episodes))
    report = diagnose(policy, planner, seeds, args.candidates, control=not args.no_control,
                      episode_length_s=args.episode_length or None, candidate_noise_rad=args.candidate_noise,
                      progress=lambda line: print(line.replace("[offline-eval]", "[planning-diagnostics]"), flush=True))
    report["settings"] = {"checkpoint": str(args.checkpoint), "planning_checkpoint": args.planning_checkpoint or "(policy)",
                          "candidates": args.candidates, "future_samples": args.future_samples,
                          "value_samples": args.value_samples, "candidate_noise_rad": args.candidate_noise,
                          "seeds": seeds}
    s = report["summary"]
    print(f"[planning-diagnostics] {s['chunk_points']} chunk points in {s['episodes']} episodes "
          f"({s['successes']} successes), {time.perf_counter() - started:.0f} s")
    print(f"  candidates: mean pairwise L1 {s['candidate_pair_l1_mean']:.4f} rad (median "
          f"{s['candidate_pair_l1_median']:.4f}), last-action spread {s['candidate_end_spread_mean']:.4f} rad")
    print(f"  values: mean range {s['value_range_mean']:.3f}, ties {s['value_tie_fraction']:.0%}, chosen != 0 "
          f"{s['chosen_other_than_0_fraction']:.0%} {s['chosen_histogram']}, candidate 0 value AUROC "
          f"{'n/a (one outcome)' if s['candidate0_value_auroc'] is None else format(s['candidate0_value_auroc'], '.2f')}")
    if "copy_value_range_mean" in s:
        print(f"  control (N copies of candidate 0): mean range {s['copy_value_range_mean']:.3f}, ties "
              f"{s['copy_value_tie_fraction']:.0%}; real range above the copies' at "
              f"{s['real_range_above_copy_fraction']:.0%} of points; value minus its seed-matched copy's "
              f"(candidates 1..): mean {s['action_effect_mean']:+.3f}, mean |.| {s['action_effect_abs_mean']:.3f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0
