"""Offline checks of a trained checkpoint, no ROS: action L1 on held-out demonstration
chunks against the mean-chunk baseline, world-model future-proprio L1 against "no change",
and closed-loop episodes run in-process (the sim stepped by the executor's logic, the policy
asked for a chunk whenever the executor has none, so compute time cannot change an outcome).

Command line: ``cosmos-policy-ros offline-eval CHECKPOINT --data DEMOS [--episodes K]``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cosmos_policy_ros.config import RobotConfig, load_config
from cosmos_policy_ros.learning.episodes import read_episode
from cosmos_policy_ros.learning.evaluation import HELD_OUT_SEED_START
from cosmos_policy_ros.types import Observation


def _chunks(episode, rate_ratio: int, chunk: int, every: int):
    """(file step, actions [chunk, dof] at the model's rate, future qpos) along one episode."""
    steps = episode.num_steps
    for t in range(0, steps - chunk * rate_ratio, every):
        index = np.minimum(t + np.arange(chunk) * rate_ratio, steps - 1)
        yield t, episode.action[index], episode.qpos[min(t + chunk * rate_ratio, steps - 1)]


def offline_metrics(policy, data_dir: str | Path, episodes: list[str], camera: str = "cam_high",
                    every: int = 50, task: str = "transfer the cube") -> dict:
    """Mean action L1 (rad) of the policy's chunk vs the demonstrated chunk, and of the mean
    chunk; mean future-proprio L1 of the world model given the demonstrated chunk vs "no change"."""
    cfg = policy.config
    policy_l1, mean_l1, wm_l1, still_l1 = [], [], [], []
    records = []
    for name in episodes:
        episode = read_episode(Path(data_dir) / name, cameras=(camera,))
        try:
            ratio = max(1, int(round(float(episode.control_rate_hz or 50.0) / cfg.control_rate_hz)))
            for t, actions, future in _chunks(episode, ratio, cfg.chunk_size, every):
                obs = Observation(stamp_ns=0, images={camera: episode.frame(camera, t)},
                                  joint_positions=episode.qpos[t], task=task)
                records.append((obs, actions, future, t))
        finally:
            episode.close()
    mean_chunk = np.mean([a for _, a, _, _ in records], axis=0)
    starts = []  # (observation, demonstrated chunk, predicted chunk) at each episode's first step
    for obs, actions, future, t in records:
        encoded = policy.encode_observation(obs)
        predicted = policy.sample_candidates(encoded, 1, seed=0)[0].actions
        if t == 0:
            starts.append((obs, actions, predicted))
        policy_l1.append(np.abs(predicted - actions).mean())
        mean_l1.append(np.abs(mean_chunk - actions).mean())
        outcome = policy.predict_outcomes(encoded, actions[None], num_future_samples=1, num_value_samples=1, seed=0)
        wm_l1.append(np.abs(outcome.future_joint_positions[0, 0] - future).mean())
        still_l1.append(np.abs(obs.joint_positions - future).mean())
    result = {"chunks": len(records), "action_l1": float(np.mean(policy_l1)),
              "mean_chunk_action_l1": float(np.mean(mean_l1)),
              "world_model_future_proprio_l1": float(np.mean(wm_l1)), "no_change_l1": float(np.mean(still_l1))}
    result["action_l1_ratio"] = result["action_l1"] / result["mean_chunk_action_l1"]
    result["world_model_ratio"] = result["world_model_future_proprio_l1"] / result["no_change_l1"]
    result.update(first_chunk_metrics(policy, starts))
    return result


def variation_captured(demonstrated: np.ndarray, predicted: np.ndarray) -> float:
    """How much of the demonstrations' variation across episodes the policy reproduces:
    the least-squares slope of predicted on demonstrated chunks ``[episodes, chunk, dof]``,
    each (step, joint) taken about its mean over the episodes. 1: the chunk follows the scene
    as the demonstrations do; 0: the same chunk whatever the scene; between: shrunk towards
    the average episode (the policy aims at where objects usually are)."""
    demonstrated, predicted = np.asarray(demonstrated, np.float64), np.asarray(predicted, np.float64)
    if demonstrated.shape != predicted.shape or demonstrated.ndim != 3 or len(demonstrated) < 2:
        raise ValueError(f"need two or more [chunk, dof] pairs of equal shape, got {demonstrated.shape} "
                         f"and {predicted.shape}")
    d = demonstrated - demonstrated.mean(axis=0)
    p = predicted - predicted.mean(axis=0)
    spread = float((d * d).sum())
    return float((p * d).sum() / spread) if spread > 0 else float("nan")


def first_chunk_metrics(policy, starts: list) -> dict:
    """Does the policy look at the scene? Every episode starts from the same pose, so at its
    first step only the camera says where the object is. ``starts``: (observation, demonstrated
    chunk, predicted chunk) at each episode's first step. Reports the policy's L1 there, the L1 of
    the mean first chunk (what a policy blind to the image can at best do) and how much the chunk
    changes when the image is swapped for another episode's (0: the image is ignored) and the
    share of the first chunks' variation across episodes it reproduces (``variation_captured``)."""
    if len(starts) < 2:
        return {}
    mean_first = np.mean([actions for _, actions, _ in starts], axis=0)
    own, blind, swap = [], [], []
    for i, (obs, actions, predicted) in enumerate(starts):
        other = starts[(i + 1) % len(starts)][0]
        swapped_obs = Observation(stamp_ns=0, images=other.images, joint_positions=obs.joint_positions, task=obs.task)
        swapped = policy.sample_candidates(policy.encode_observation(swapped_obs), 1, seed=0)[0].actions
        own.append(np.abs(predicted - actions).mean())
        blind.append(np.abs(mean_first - actions).mean())
        swap.append(np.abs(predicted - swapped).mean())
    return {"first_chunks": len(starts), "first_chunk_action_l1": float(np.mean(own)),
            "mean_first_chunk_action_l1": float(np.mean(blind)), "image_swap_action_change": float(np.mean(swap)),
            "first_chunk_variation_captured": variation_captured(np.stack([a for _, a, _ in starts]),
                                                                 np.stack([p for _, _, p in starts]))}


def closed_loop(policy, seeds: list[int], config: RobotConfig | None = None, episode_length_s: float | None = None,
                progress=print) -> list[dict]:
    """Run ``policy`` on seeded sim episodes in-process; one result per seed."""
    from cosmos_policy_ros.learning.demos import run_expert_episode
    from cosmos_policy_ros.sim.aloha_sim import AlohaSim

    config = config or load_config("aloha")
    cameras = {c: config.sim.mujoco_cameras[c] for c in policy.config.camera_names}
    sim = AlohaSim(config.sim.task)
    results = []
    try:
        for seed in seeds:
            started = time.perf_counter()
            episode = run_expert_episode(sim, config, seed, episode_length_s or config.sim.episode_length_s,
                                         cameras=cameras, policy=policy)
            results.append({"seed": seed, "success": episode.success, "max_reward": episode.max_reward,
                            "wall_s": time.perf_counter() - started})
            progress(f"[offline-eval] seed {seed}: {'success' if episode.success else 'failure'} "
                     f"(max reward {episode.max_reward}/4, {results[-1]['wall_s']:.0f} s)")
    finally:
        sim.close()
    return results


def add_offline_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="Cosmos Policy checkpoint folder")
    parser.add_argument("--data", default="", help="demonstration folder for the offline L1 metrics")
    parser.add_argument("--held-out", type=int, default=2, help="last N episode files are the held-out ones")
    parser.add_argument("--episodes", type=int, default=10, help="closed-loop episodes on held-out seeds")
    parser.add_argument("--first-seed", type=int, default=HELD_OUT_SEED_START)
    parser.add_argument("--out", default="", help="JSON file for the results")


def run_offline_eval(args: argparse.Namespace) -> int:
    import torch

    from cosmos_policy_ros.model.cosmos_policy import CosmosPolicy

    torch.set_num_threads(max(1, torch.get_num_threads()))
    policy = CosmosPolicy.from_pretrained(args.checkpoint, device="cpu", decode_future_images=False)
    report: dict = {"checkpoint": str(args.checkpoint)}
    if args.data:
        files = sorted(Path(args.data).glob("episode_*.hdf5"), key=lambda p: int(p.stem.split("_")[-1]))
        report["offline"] = offline_metrics(policy, args.data, [f.name for f in files[-args.held_out:]])
        print(json.dumps(report["offline"], indent=2), flush=True)
    if args.episodes:
        seeds = list(range(args.first_seed, args.first_seed + args.episodes))
        results = closed_loop(policy, seeds, progress=lambda line: print(line, flush=True))
        report["closed_loop"] = {"episodes": len(results), "successes": sum(r["success"] for r in results),
                                 "mean_max_reward": float(np.mean([r["max_reward"] for r in results])),
                                 "results": results}
        print(f"[offline-eval] {report['closed_loop']['successes']}/{len(results)} succeeded, mean max reward "
              f"{report['closed_loop']['mean_max_reward']:.2f}/4", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0
