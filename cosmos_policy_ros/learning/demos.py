"""Scripted-expert transfer-cube demonstrations, generated in-process into training episodes.

The recording path (`demo --record` + `bags-to-dataset`) runs the whole ROS graph; this
module runs the same pieces in one process and one thread, which is several times faster:
the MuJoCo sim (`sim.AlohaSim`, cube pose sampled from the seed exactly as the sim node
does), the scripted expert (`sim.ScriptedTransferCubeExpert`) and the executor's logic
(`control.ChunkExecutor`: blending, limits, rate limits), with the sim's eval-mode timing:
a chunk is requested when the executor has none to run and starts at that tick.

Per control tick ``t``: ``qpos[t]`` is the measured state, ``action[t]`` the command the
executor sent for the step from ``t`` to ``t + 1``, camera frames are rendered at the sim's
camera rate and held in between (what the recorder's nearest-frame resampling produces).
The files have the layout, keys and attributes of `bags_to_dataset` (see its docstring);
a test compares both paths on one episode.

Seeds: demonstrations use the seeds given (default 0 ..); `eval` uses seeds from
`evaluation.HELD_OUT_SEED_START` on, so held-out cube positions are never in the demos.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cosmos_policy_ros.config import RobotConfig, load_config
from cosmos_policy_ros.learning.bags_to_dataset import (
    STATS_FILENAMES,
    compute_dataset_statistics,
)
from cosmos_policy_ros.learning.episodes import (
    DEFAULT_GAMMA,
    DEFAULT_VALUE_RULE,
    value_targets,
    write_episode,
)
from cosmos_policy_ros.types import ActionChunk, Observation

SIM_PERIOD_NS = 20_000_000


@dataclass
class DemoEpisode:
    """One episode on the control-rate grid (see the module docstring for the timing)."""

    seed: int
    episode_id: str
    qpos: np.ndarray  # [T, dof] measured joints (radians, normalized grippers)
    action: np.ndarray  # [T, dof] executed commands
    images: dict[str, np.ndarray]  # camera -> [T, H, W, 3] uint8
    timestamps_ns: np.ndarray  # [T]
    success: bool
    max_reward: int


def run_expert_episode(sim, config: RobotConfig, seed: int, episode_length_s: float,
                       cameras: dict[str, str] | None = None, image_hw: tuple[int, int] | None = None,
                       camera_rate_hz: float | None = None, policy=None) -> DemoEpisode:
    """Run one seeded episode of `policy` (default: the scripted expert) through the
    executor's logic; render `cameras` (config name -> MuJoCo camera) at the camera rate."""
    from cosmos_policy_ros.control.execution import ChunkExecutor
    from cosmos_policy_ros.control.policies import policy_control_period_s
    from cosmos_policy_ros.sim.scripted import ScriptedTransferCubeExpert

    sim_cfg = config.sim
    cameras = dict(sim_cfg.mujoco_cameras) if cameras is None else cameras
    image_hw = image_hw or (sim_cfg.image_height, sim_cfg.image_width)
    camera_period_ns = int(1e9 / float(camera_rate_hz or sim_cfg.camera_rate_hz))
    horizon = config.policy.horizon
    policy = policy or ScriptedTransferCubeExpert(horizon=horizon, control_period_s=config.control_period_s)
    policy.reset()
    executor = ChunkExecutor.from_config(config)
    state = sim.reset(seed)
    object_pose = state.object_pose.copy()
    steps = int(round(episode_length_s / (SIM_PERIOD_NS / 1e9)))
    qpos, action = [], []
    frames: dict[str, list[np.ndarray]] = {c: [] for c in cameras}
    latest: dict[str, np.ndarray] = {}
    next_render_ns = 0
    chunk_id = 0
    for k in range(steps):
        t_ns = k * SIM_PERIOD_NS
        if t_ns >= next_render_ns:
            latest = {c: sim.render(mj, *image_hw) for c, mj in cameras.items()}
            next_render_ns += camera_period_ns
        result = executor.tick(t_ns, state.joint_positions)
        if result.source != "chunk":
            observation = Observation(stamp_ns=t_ns, images=latest, joint_positions=state.joint_positions.copy(),
                                      task=config.policy.task,
                                      privileged={"object_pose": object_pose})
            output = policy.infer(observation)
            chunk_id += 1
            period_s = policy_control_period_s(policy, config.control_period_s)  # a checkpoint's own rate
            chunk = ActionChunk(stamp_ns=t_ns, chunk_id=chunk_id, joint_names=config.joint_names,
                                positions=np.asarray(output.actions, dtype=np.float64), control_period_s=period_s)
            if executor.submit(chunk, t_ns):
                result = executor.tick(t_ns, state.joint_positions)
        qpos.append(state.joint_positions.copy())
        action.append(result.command.copy())
        for cam in cameras:
            frames[cam].append(latest[cam])
        state = sim.step(result.command)
    return DemoEpisode(
        seed=seed, episode_id=f"{config.robot}_sim_seed{seed}", qpos=np.asarray(qpos), action=np.asarray(action),
        images={c: np.stack(f) for c, f in frames.items()},
        timestamps_ns=np.arange(steps, dtype=np.int64) * SIM_PERIOD_NS,
        success=bool(state.success), max_reward=int(state.max_reward))


def write_episode_hdf5(episode: DemoEpisode, path: Path, config: RobotConfig, task: str,
                       gamma: float = DEFAULT_GAMMA, compression: str | None = None) -> None:
    """The `bags_to_dataset` episode layout (keys, dtypes, attributes)."""
    rate = config.control_rate_hz
    terminal_reward = 1.0 if episode.success else 0.0
    qvel = (np.gradient(episode.qpos, 1.0 / rate, axis=0) if len(episode.qpos) > 1
            else np.zeros_like(episode.qpos))
    write_episode(
        path, qpos=episode.qpos, action=episode.action, images=episode.images, compression=compression,
        qvel=qvel, value=value_targets(len(episode.qpos), terminal_reward, gamma),
        timestamps_ns=episode.timestamps_ns,
        attrs={"sim": False, "compress": False, "success": bool(episode.success),
               "terminal_reward": terminal_reward,
               "outcome_note": f"in-process scripted expert, max reward {episode.max_reward}/4",
               "task_description": task, "episode_id": episode.episode_id, "source_bag": "",
               "control_rate_hz": float(rate), "gamma": float(gamma), "value_rule": DEFAULT_VALUE_RULE, "joint_names": list(config.joint_names)})


class _ExpertWorker:
    """Runs seeded expert episodes in one process (one sim) and writes each kept one to a
    staging file; the caller names the files in seed order."""

    def __init__(self, config: RobotConfig, length_s: float, cameras: dict[str, str], keep_failures: bool,
                 compression: str | None, staging: Path) -> None:
        from cosmos_policy_ros.sim.aloha_sim import AlohaSim

        self.config, self.length_s, self.cameras = config, length_s, cameras
        self.keep_failures, self.compression, self.staging = keep_failures, compression, staging
        self.sim = AlohaSim(config.sim.task)

    def run(self, seed: int) -> tuple[dict, np.ndarray | None, np.ndarray | None]:
        episode = run_expert_episode(self.sim, self.config, seed, self.length_s, cameras=self.cameras)
        summary = {"seed": episode.seed, "episode_id": episode.episode_id, "success": episode.success,
                   "max_reward": episode.max_reward, "num_steps": len(episode.qpos)}
        if not (episode.success or self.keep_failures):
            return summary, None, None
        write_episode_hdf5(episode, self.staging / f"seed_{seed}.hdf5", self.config, self.config.policy.task,
                           compression=self.compression)
        return summary, episode.action, episode.qpos

    def close(self) -> None:
        self.sim.close()


_WORKER: _ExpertWorker | None = None


def _start_worker(*args) -> None:
    global _WORKER
    _WORKER = _ExpertWorker(*args)


def _run_in_worker(seed: int):
    return _WORKER.run(seed)


def generate_demos(out_dir: str | Path, episodes: int, seed: int = 0, config: str | RobotConfig = "aloha",
                   episode_length_s: float | None = None, keep_failures: bool = False,
                   progress=print, cameras: list[str] | None = None, compression: str | None = None,
                   workers: int = 1) -> list[dict]:
    """Write `episodes` scripted-expert episodes (seeds seed .. seed + episodes - 1) as
    out_dir/episode_<i>.hdf5 plus the statistics files; returns one summary per seed.
    ``workers`` > 1 runs episodes in that many processes (one sim each); every episode
    depends on its seed alone, so the files are the same as with one worker."""
    if episodes <= 0:
        raise ValueError(f"--episodes must be positive, got {episodes}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    config = config if isinstance(config, RobotConfig) else load_config(config)
    if config.dof != 14:
        raise ValueError(f"{config.path}: the transfer-cube expert drives the 14 ALOHA joints, config has {config.dof}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("episode_*.hdf5")):
        raise FileExistsError(f"{out} already holds episode files; use an empty directory")
    length_s = float(episode_length_s or config.sim.episode_length_s)
    rendered = dict(config.sim.mujoco_cameras)
    if cameras:
        unknown = [c for c in cameras if c not in rendered]
        if unknown:
            raise ValueError(f"--cameras {unknown}: not rendered by the sim (sim.mujoco_cameras in {config.path}: "
                             f"{sorted(rendered)})")
        rendered = {c: rendered[c] for c in cameras}
    staging = out / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    seeds = list(range(seed, seed + episodes))
    worker_args = (config, length_s, rendered, keep_failures, compression, staging)
    results: dict[int, tuple] = {}
    started = time.perf_counter()

    def report(result: tuple) -> None:
        summary = result[0]
        results[summary["seed"]] = result
        done = len(results)
        elapsed = time.perf_counter() - started
        progress(f"[demos] {done}/{episodes} seed {summary['seed']}: "
                 f"{'success' if summary['success'] else 'failure'} (max reward {summary['max_reward']}/4); "
                 f"{elapsed:.0f} s, ~{elapsed / done * (episodes - done):.0f} s left")

    if workers == 1:
        worker = _ExpertWorker(*worker_args)
        try:
            for s in seeds:
                report(worker.run(s))
        finally:
            worker.close()
    else:
        # spawn: a forked child would share the parent's OpenGL / MuJoCo state
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, episodes), mp_context=context, initializer=_start_worker,
                                 initargs=worker_args) as pool:
            for result in pool.map(_run_in_worker, seeds):
                report(result)
    summaries, actions, proprio = [], [], []
    for s in seeds:
        summary, action, qpos = results[s]
        if action is not None:
            name = f"episode_{len(actions)}.hdf5"
            (staging / f"seed_{s}.hdf5").rename(out / name)
            summary["file"] = name
            actions.append(action)
            proprio.append(qpos)
        summaries.append(summary)
    shutil.rmtree(staging, ignore_errors=True)
    if not actions:
        raise RuntimeError(f"no successful demonstration among seeds {seed}..{seed + episodes - 1}")
    stats = compute_dataset_statistics(actions, proprio)
    for name in STATS_FILENAMES:
        (out / name).write_text(json.dumps(stats, indent=2))
    info = {"control_rate_hz": config.control_rate_hz, "gamma": DEFAULT_GAMMA, "source": "in-process scripted expert",
            "joint_names": list(config.joint_names), "seeds": [seed, seed + episodes - 1],
            "episodes": [s for s in summaries if "file" in s], "dropped": [s for s in summaries if "file" not in s]}
    (out / "dataset_info.json").write_text(json.dumps(info, indent=2))
    return summaries


def add_demos_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="dataset folder to write (must hold no episodes yet)")
    parser.add_argument("--episodes", type=int, default=50, help="episodes (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode; episode k uses seed + k")
    parser.add_argument("--config", default="aloha", help="robot YAML (path or name in config/)")
    parser.add_argument("--episode-length", type=float, default=0.0, help="sim seconds (default: sim.episode_length_s)")
    parser.add_argument("--keep-failures", action="store_true", help="also write episodes the expert failed")
    parser.add_argument("--cameras", nargs="+", default=None,
                        help="cameras to render and store (default: every camera in sim.mujoco_cameras)")
    parser.add_argument("--compression", choices=("gzip", "lzf"), default=None,
                        help="HDF5 compression of the episode arrays and frames (default: none)")
    parser.add_argument("--workers", type=int, default=1,
                        help="episodes run in this many processes, one sim each (default 1; same files for any count)")


def run_demos(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        summaries = generate_demos(args.out, args.episodes, args.seed, args.config, args.episode_length or None,
                                   args.keep_failures, progress=lambda line: print(line, flush=True),
                                   cameras=args.cameras, compression=args.compression,
                                   workers=args.workers)
    except (ValueError, FileExistsError, RuntimeError) as exc:
        print(f"[demos] {exc}", file=sys.stderr)
        return 2
    written = sum("file" in s for s in summaries)
    print(f"[demos] wrote {written} episodes to {args.out} "
          f"({sum(s['success'] for s in summaries)}/{len(summaries)} expert successes) in "
          f"{time.perf_counter() - started:.1f} s")
    return 0
