"""Recorded episode bags -> ALOHA HDF5 training episodes, dataset statistics, value targets.

Owns the offline half of the data loop (no ROS imports): reading the bags written by
``recording.EpisodeRecorder``, resampling every stream onto one control-rate time grid,
and writing what ALOHA/ACT tools and the Cosmos Policy loaders read.

Time grid: ``t_k = t_0 + k / control_rate_hz`` from the first instant every needed stream
has data (``t_0``) to the last (``t_end``), on the bag's log time (receive time).
At each ``t_k``: camera frames are the nearest frame in time, joint states are linearly
interpolated between the two samples around ``t_k``, actions are linearly interpolated
(``action_interpolation='linear'``) or the last command at or before ``t_k`` (``'hold'``).

Episode file (``episode_<i>.hdf5``, the ALOHA layout, written with
``learning.episodes.EpisodeWriter``, the package's one episode reader/writer)::

    /observations/qpos              [T, 14] float64  joint_names order, gripper in [0, 1]
    /observations/qvel              [T, 14] float64  from JointState.velocity, else d(qpos)/dt
    /observations/effort            [T, 14] float64  only when every JointState has effort
    /observations/images/<camera>   [T, H, W, 3] uint8 RGB
    /action                         [T, 14] float64  executed commands, joint_names order
    /value                          [T] float32      value targets, see episodes.value_targets()
    /timestamps_ns                  [T] int64        grid times (bag log time)
    attrs: sim=False, compress=False (images stored raw), success, success_score (only
           when the label has a score), task_description, episode_id, source_bag,
           control_rate_hz, gamma, value_rule, terminal_reward, outcome_note, joint_names

Statistics (``dataset_statistics.json``, also saved as ``aloha_dataset_statistics.json``,
the name the official ALOHA checkpoint ships it under): ``actions_`` and ``proprio_``
(= qpos) ``min/max/mean/std/median``, per dimension over every step of every episode, as
the official Cosmos Policy loaders compute them (``np.std``: population std).

Robot configuration: the robot YAML the nodes use, read by ``cosmos_policy_ros.config``
(joint names, each arm's JointState topic and names, gripper finger range normalized to
[0, 1], camera topics and which are required, camera transport, control rate).
The action topic (default ``executed_command``) carries std_msgs/Float64MultiArray with
the 14-dof command in joint_names order; sensor_msgs/JointState,
trajectory_msgs/JointTrajectory and cosmos_policy_ros/ActionChunk are also decoded.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from tqdm import tqdm

from cosmos_policy_ros.config import (
    ConfigError,
    load_config,
)
from cosmos_policy_ros.learning.bag_episode import (
    DEFAULT_ACTION_TOPIC,
    STATS_FILENAMES,
    BagEpisode,
    DatasetConfig,
    DatasetError,
)
from cosmos_policy_ros.learning.episodes import (
    DEFAULT_GAMMA,
    DEFAULT_VALUE_RULE,
    VALUE_RULES,
    EpisodeWriter,
    ValueRule,
    resample_hold,
    resample_linear,
    resample_nearest,
    value_targets,
)
from cosmos_policy_ros.recording import (
    EpisodeOutcome,
    build_typestore,
    is_bag_closed,
    read_episode_info,
    read_outcome,
)

__all__ = [
    'DEFAULT_GAMMA',
    'BagProblem',
    'DatasetConfig',
    'DatasetError',
    'EpisodeSummary',
    'add_bags_to_dataset_arguments',
    'bags_to_dataset',
    'check_bags',
    'compute_dataset_statistics',
    'run_bags_to_dataset',
    'value_targets',
]

# --------------------------------------------------------------------------- conversion


@dataclass(frozen=True)
class EpisodeSummary:
    path: Path
    source_bag: Path
    episode_id: str
    num_steps: int
    duration_s: float
    success: bool
    score: float | None
    cameras: tuple[str, ...]


def compute_dataset_statistics(actions: Sequence[np.ndarray], proprio: Sequence[np.ndarray]) -> dict[str, list[float]]:
    """The official Cosmos Policy statistics over every step of every episode."""
    stats: dict[str, list[float]] = {}
    for key, arrays in (('actions', actions), ('proprio', proprio)):
        stacked = np.concatenate([np.asarray(a, np.float64) for a in arrays], axis=0)
        for name, fn in (('min', np.min), ('max', np.max), ('mean', np.mean), ('std', np.std), ('median', np.median)):
            stats[f'{key}_{name}'] = [float(x) for x in fn(stacked, axis=0)]
    return stats


Unlabeled = Literal['error', 'skip', 'success', 'failure']
Invalid = Literal['error', 'skip']


@dataclass(frozen=True)
class BagProblem:
    """Why one bag cannot be converted (a truncated bag, an unreadable or missing label, a
    bag of another robot set-up)."""

    bag: Path
    reason: str

    def __str__(self) -> str:
        return f'{self.bag}: {self.reason}'


def _outcome_for(bag: Path, unlabeled: Unlabeled) -> EpisodeOutcome | None:
    try:
        outcome = read_outcome(bag)
    except (KeyError, TypeError, ValueError, yaml.YAMLError) as err:
        raise DatasetError(f'{bag}: {bag / "outcome.yaml"} cannot be read ({err!r}); correct it with '
                           '`cosmos-policy-ros label`') from err
    if outcome is not None:
        return outcome
    if unlabeled == 'error':
        raise DatasetError(
            f'{bag}: episode has no outcome label ({bag / "outcome.yaml"} missing); label it with '
            '`cosmos-policy-ros label`, or choose what unlabeled episodes are (--unlabeled skip|success|failure)'
        )
    if unlabeled == 'skip':
        return None
    return EpisodeOutcome(unlabeled == 'success', None, 'unlabeled')


def _signature_problem(bag: Path, expected: Mapping[str, Any] | None) -> str:
    """'' when the bag's recorded robot signature matches ``expected`` (or either is absent),
    else what differs."""
    if not expected:
        return ''
    recorded = (read_episode_info(bag).get('metadata') or {}).get('robot_signature')
    if not recorded:
        return ''  # recorded without one (older recorder, other tools): the topic checks still apply
    differing = [key for key in expected if key in recorded and recorded[key] != expected[key]]
    if not differing:
        return ''
    details = '; '.join(f'{key}: bag {recorded[key]!r}, config {expected[key]!r}' for key in differing)
    return (f"recorded with another robot config (robot {recorded.get('robot')!r}): {details}; "
            'convert it with its own --config into its own dataset')


def check_bags(
    bags: Sequence[Path], cfg: DatasetConfig, unlabeled: Unlabeled = 'error',
) -> tuple[list[tuple[Path, EpisodeOutcome]], list[Path], list[BagProblem]]:
    """Before any conversion: ``(convertible bags with their outcome, unlabeled bags
    skipped, problems)``. A problem is a bag that was not closed (recorder killed), an
    unlabeled bag under ``unlabeled='error'``, an unreadable label, or a bag whose recorded
    robot signature differs from the conversion config's."""
    todo: list[tuple[Path, EpisodeOutcome]] = []
    skipped: list[Path] = []
    problems: list[BagProblem] = []
    for bag in bags:
        if not bag.is_dir():
            problems.append(BagProblem(bag, 'not a directory'))
            continue
        if not is_bag_closed(bag):
            problems.append(BagProblem(bag, f'bag was not closed (recorder killed?); make it readable with '
                                            f'`cosmos-policy-ros recover {bag}`, then check its label'))
            continue
        mismatch = _signature_problem(bag, cfg.signature)
        if mismatch:
            problems.append(BagProblem(bag, mismatch))
            continue
        try:
            outcome = _outcome_for(bag, unlabeled)
        except DatasetError as err:
            problems.append(BagProblem(bag, str(err).removeprefix(f'{bag}: ')))
            continue
        if outcome is None:
            skipped.append(bag)
        else:
            todo.append((bag, outcome))
    return todo, skipped, problems


def _convert_one(
    bag: Path, out_path: Path, cfg: DatasetConfig, typestore: Any, outcome: EpisodeOutcome,
    gamma: float, control_rate_hz: float, action_interpolation: str, hdf5_compression: str | None,
    value_rule: ValueRule,
) -> tuple[EpisodeSummary, np.ndarray, np.ndarray]:
    episode = BagEpisode(bag, cfg, typestore)
    try:
        joints = episode.read_joints()
        action_t, action_v = episode.read_actions()
        image_t = episode.image_times()
        streams = {f'arm {s}': j[0] for s, j in joints.items()}
        streams['actions'] = action_t
        streams.update({f'camera {c}': t for c, t in image_t.items()})
        for what, t in streams.items():
            if len(t) == 0:
                raise DatasetError(f'{bag}: no data for {what}')
        t0 = max(int(t.min()) for t in streams.values())
        t_end = min(int(t.max()) for t in streams.values())
        period_ns = 1e9 / control_rate_hz
        if t_end < t0:
            raise DatasetError(f'{bag}: streams do not overlap in time ({", ".join(streams)})')
        num_steps = int(math.floor((t_end - t0) / period_ns + 1e-9)) + 1
        grid = t0 + np.round(np.arange(num_steps) * period_ns).astype(np.int64)
        rel = grid - t0

        dof = cfg.dof
        qpos = np.full((num_steps, dof), np.nan)
        qvel = np.full((num_steps, dof), np.nan)
        effort = np.full((num_steps, dof), np.nan)
        have_vel = have_eff = True
        for side, (t, pos, vel, eff) in joints.items():
            cols = ~np.isnan(pos[0])
            qpos[:, cols] = resample_linear(rel, t - t0, pos[:, cols])
            have_vel = have_vel and vel is not None
            have_eff = have_eff and eff is not None
            if vel is not None:
                qvel[:, cols] = resample_linear(rel, t - t0, vel[:, cols])
            if eff is not None:
                effort[:, cols] = resample_linear(rel, t - t0, eff[:, cols])
        if not have_vel:
            qvel = np.gradient(qpos, 1.0 / control_rate_hz, axis=0) if num_steps > 1 else np.zeros_like(qpos)
        if action_interpolation == 'linear':
            action = resample_linear(rel, action_t - t0, action_v)
        else:
            action = resample_hold(grid, action_t, action_v)
        values = value_targets(num_steps, outcome.terminal_reward, gamma, value_rule)

        info = read_episode_info(bag)
        metadata = info.get('metadata') or {}
        attrs = {
            'sim': False, 'compress': False, 'success': bool(outcome.success),
            'success_score': None if outcome.score is None else float(outcome.score),
            'terminal_reward': float(outcome.terminal_reward), 'outcome_note': outcome.note,
            'task_description': str(metadata.get('task', '')), 'episode_id': str(info.get('episode_id', bag.name)),
            'source_bag': str(bag), 'control_rate_hz': float(control_rate_hz), 'gamma': float(gamma),
            'value_rule': value_rule, 'joint_names': list(cfg.joint_names),
        }
        with EpisodeWriter(out_path, hdf5_compression) as writer:
            writer.write_attrs(attrs)
            writer.write_arrays(qpos=qpos, qvel=qvel, effort=effort if have_eff else None, action=action,
                                value=values, timestamps_ns=grid)
            for cam, times in image_t.items():
                order = np.argsort(times, kind='stable')
                pick = order[resample_nearest(grid, times[order])]  # reading-order index per grid step
                steps_of: dict[int, list[int]] = {}
                for step, index in enumerate(pick):
                    steps_of.setdefault(int(index), []).append(step)
                dset = None
                for index, frame in episode.frames(cam, set(steps_of)):
                    if dset is None:
                        dset = writer.image_dataset(cam, num_steps, frame.shape)
                    if frame.shape != dset.shape[1:]:
                        raise DatasetError(f'{bag}: camera {cam} changes resolution {dset.shape[1:]} -> {frame.shape}')
                    for step in steps_of[index]:
                        dset[step] = frame
    finally:
        episode.close()
    summary = EpisodeSummary(
        out_path, bag, str(info.get('episode_id', bag.name)), num_steps, (grid[-1] - grid[0]) / 1e9,
        outcome.success, outcome.score, tuple(image_t),
    )
    return summary, action, qpos


def bags_to_dataset(
    bag_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    config: Mapping[str, Any] | DatasetConfig | None = None,
    gamma: float = DEFAULT_GAMMA,
    control_rate_hz: float | None = None,
    *,
    action_topic: str | None = None,
    action_interpolation: Literal['linear', 'hold'] = 'linear',
    unlabeled: Unlabeled = 'error',
    invalid: Invalid = 'error',
    hdf5_compression: str | None = None,
    value_rule: ValueRule = DEFAULT_VALUE_RULE,
    typestore: Any = None,
    progress: bool = True,
    extra_info: Mapping[str, Any] | None = None,
    report: Any = None,
) -> list[EpisodeSummary]:
    """Convert episode bags to ``out_dir/episode_<i>.hdf5`` plus the statistics JSON.

    Args:
        bag_dirs: rosbag2 directories written by ``EpisodeRecorder`` (closed or recovered).
        out_dir: created if missing; existing ``episode_*.hdf5`` there are an error.
        config: the robot YAML dict (or a DatasetConfig); None: ALOHA defaults.
        gamma: discount per control step for the value targets (see value_targets()).
        control_rate_hz: grid rate; default the config's ``control_rate_hz``.
        action_topic: default the config's ``action_topic``, else ``executed_command``.
        action_interpolation: 'linear' or 'hold' (last command at or before each step).
        unlabeled: what an episode without ``outcome.yaml`` is: 'error', 'skip',
            'success' (e.g. teleoperated demonstrations) or 'failure'.
        hdf5_compression: h5py filter for the datasets (None, 'gzip', 'lzf').
        value_rule: 'official' (any positive score: full-success targets) or 'scaled'
            (targets times the score); see ``episodes.value_targets``.
        invalid: what a bag that cannot be converted is (see ``check_bags``; also a bag
            whose conversion fails): 'error' (default) converts nothing and raises
            DatasetError listing every such bag; 'skip' converts the others, reports each
            skipped bag with its reason through ``report`` and lists them in
            ``dataset_info.json`` under ``skipped_invalid``.
        extra_info: more entries for ``dataset_info.json`` (e.g. how rollouts were collected).
        report: callable taking one line per skipped bag (default: print to stderr).
    Returns:
        One summary per written episode, in input order.
    """
    if action_interpolation not in ('linear', 'hold'):
        raise ValueError(f"action_interpolation must be 'linear' or 'hold', got {action_interpolation!r}")
    if value_rule not in VALUE_RULES:
        raise ValueError(f'value_rule must be one of {VALUE_RULES}, got {value_rule!r}')
    if unlabeled not in ('error', 'skip', 'success', 'failure'):
        raise ValueError(f'unlabeled must be error|skip|success|failure, got {unlabeled!r}')
    if invalid not in ('error', 'skip'):
        raise ValueError(f'invalid must be error|skip, got {invalid!r}')
    report = report or (lambda line: print(line, file=sys.stderr, flush=True))
    if isinstance(config, DatasetConfig):
        cfg = config
    else:
        cfg = DatasetConfig.from_robot_config(config, action_topic=action_topic)
    if action_topic and cfg.action_topic != action_topic:
        cfg = dataclasses.replace(cfg, action_topic=action_topic)
    rate = float(control_rate_hz or cfg.control_rate_hz)
    if not rate > 0:
        raise ValueError(f'control_rate_hz must be positive, got {rate}')
    bags = [Path(b) for b in bag_dirs]
    if not bags:
        raise DatasetError('no bags given')
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    existing = sorted(out.glob('episode_*.hdf5'))
    if existing:
        raise DatasetError(
            f'{out} already holds {len(existing)} episode files ({existing[0].name}, ...); use an empty directory')
    typestore = typestore if typestore is not None else build_typestore()

    # Check every bag (closed, labelled, same robot set-up) before the slow conversion starts.
    todo, skipped_unlabeled, problems = check_bags(bags, cfg, unlabeled)
    if problems and invalid == 'error':
        raise DatasetError(_problems_text(problems, len(bags)))
    for problem in problems:
        report(f'bags-to-dataset: skipped {problem}')
    summaries: list[EpisodeSummary] = []
    all_actions: list[np.ndarray] = []
    all_proprio: list[np.ndarray] = []
    for bag, outcome in tqdm(todo, desc='bags -> episodes', unit='episode', disable=not progress):
        path = out / f'episode_{len(summaries)}.hdf5'
        try:
            summary, action, qpos = _convert_one(
                bag, path, cfg, typestore, outcome, gamma, rate, action_interpolation, hdf5_compression, value_rule,
            )
        except DatasetError as err:
            path.unlink(missing_ok=True)
            if invalid == 'error':
                for written in summaries:  # all or nothing: the folder must not hold a partial dataset
                    written.path.unlink(missing_ok=True)
                raise
            problems.append(BagProblem(bag, str(err).removeprefix(f'{bag}: ')))
            report(f'bags-to-dataset: skipped {problems[-1]}')
            continue
        summaries.append(summary)
        all_actions.append(action)
        all_proprio.append(qpos)
    if not summaries:
        why = [f'{len(skipped_unlabeled)} unlabeled (unlabeled=skip)'] if skipped_unlabeled else []
        why += [f'{len(problems)} invalid'] if problems else []
        raise DatasetError(f'every bag was skipped ({", ".join(why)}); nothing to write')

    stats = compute_dataset_statistics(all_actions, all_proprio)
    for name in STATS_FILENAMES:
        (out / name).write_text(json.dumps(stats, indent=2))
    info = {
        'control_rate_hz': rate,
        'gamma': gamma,
        'value_rule': value_rule,
        'action_topic': cfg.action_topic,
        'action_interpolation': action_interpolation,
        'joint_names': list(cfg.joint_names),
        'episodes': [
            {'file': s.path.name, 'source_bag': str(s.source_bag), 'episode_id': s.episode_id,
             'num_steps': s.num_steps, 'success': s.success, 'score': s.score}
            for s in summaries
        ],
        'skipped_unlabeled': [str(bag) for bag in skipped_unlabeled],
        'skipped_invalid': [{'bag': str(p.bag), 'reason': p.reason} for p in problems],
        **dict(extra_info or {}),
    }
    (out / 'dataset_info.json').write_text(json.dumps(info, indent=2))
    return summaries


def _problems_text(problems: Sequence[BagProblem], total: int) -> str:
    lines = [f'{len(problems)} of {total} bags cannot be converted; nothing was written:']
    lines += [f'  {p}' for p in problems]
    lines.append('fix them (recover / label / convert each robot config separately) or pass --skip-invalid '
                 '(invalid=skip) to convert the others and list these in dataset_info.json')
    return '\n'.join(lines)


# --------------------------------------------------------------------------- CLI


def _expand_bag_dirs(paths: Sequence[str]) -> list[Path]:
    """Bag directories as given, or the bag directories one level inside a given folder."""
    bags: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise DatasetError(f'{path}: not a directory')
        if any(path.glob('*.mcap')) or (path / 'metadata.yaml').exists():
            bags.append(path)
        else:
            # episode.yaml without an .mcap: a recorder killed at the start; check_bags reports it.
            inner = sorted(p for p in path.iterdir()
                           if p.is_dir() and (any(p.glob('*.mcap')) or (p / 'episode.yaml').exists()))
            if not inner:
                raise DatasetError(f'{path}: neither a bag directory nor a folder of bag directories')
            bags.extend(inner)
    return bags


def add_bags_to_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``cosmos-policy-ros bags-to-dataset``."""
    parser.add_argument('bags', nargs='+', help='episode bag directories, or folders holding them')
    parser.add_argument('--out', required=True, help='output directory for episode_<i>.hdf5 and statistics')
    parser.add_argument('--config', default=None, help='robot YAML, path or name in config/ (default: aloha)')
    parser.add_argument('--control-rate-hz', type=float, default=None,
                        help="grid rate (default: the config's control_rate_hz)")
    parser.add_argument('--gamma', type=float, default=DEFAULT_GAMMA,
                        help='discount per control step for value targets')
    parser.add_argument('--value-rule', choices=VALUE_RULES, default=DEFAULT_VALUE_RULE,
                        help='value targets of a scored episode: official (any positive score counts as a full '
                             'success, the default) or scaled (targets times the score)')
    parser.add_argument('--action-topic', default=None,
                        help=f'executed command topic (default: {DEFAULT_ACTION_TOPIC})')
    parser.add_argument('--action-interpolation', choices=('linear', 'hold'), default='linear')
    parser.add_argument('--cameras', nargs='+', default=None, help='camera names to keep (default: all in the config)')
    parser.add_argument('--unlabeled', choices=('error', 'skip', 'success', 'failure'), default='error',
                        help='what an episode without outcome.yaml is (demonstrations: success)')
    parser.add_argument('--skip-invalid', action='store_true',
                        help='skip bags that cannot be converted (not closed, bad label, another robot config), '
                             'each reported and listed in dataset_info.json; default: refuse and convert nothing')
    parser.add_argument('--hdf5-compression', choices=('gzip', 'lzf'), default=None)
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')


def run_bags_to_dataset(args: argparse.Namespace) -> int:
    """Entry point of the CLI subcommand; returns the exit status."""
    try:
        config = load_config(args.config or 'aloha')
    except ConfigError as err:
        print(f'bags-to-dataset: {err}', file=sys.stderr)
        return 2
    try:
        cfg = DatasetConfig.from_robot_config(config, action_topic=args.action_topic, cameras=args.cameras)
        summaries = bags_to_dataset(
            _expand_bag_dirs(args.bags), args.out, cfg, gamma=args.gamma, control_rate_hz=args.control_rate_hz,
            action_interpolation=args.action_interpolation, unlabeled=args.unlabeled,
            invalid='skip' if getattr(args, 'skip_invalid', False) else 'error',
            hdf5_compression=args.hdf5_compression, value_rule=args.value_rule, progress=not args.no_progress,
        )
    except DatasetError as err:
        print(f'bags-to-dataset: {err}', file=sys.stderr)
        return 2
    successes = sum(s.success for s in summaries)
    steps = sum(s.num_steps for s in summaries)
    print(f'wrote {len(summaries)} episodes ({successes} successes, {steps} steps) and '
          f'{STATS_FILENAMES[0]} to {args.out}')
    return 0
