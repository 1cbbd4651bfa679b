"""Training samples out of episode folders, and the official mix of data and objectives.

One training sample, at the checkpoint's ``control_rate_hz`` (episodes recorded at
another rate are resampled by ``learning.episodes``: joints/actions/values linearly,
images nearest)::

    s   = current images (every camera of the layout) + joint positions at step t
    a   = the commanded actions of steps t .. t + chunk_size - 1 (last one repeated
          past the episode's end)
    s'  = images + joint positions at step min(t + chunk_size, T - 1)
    V   = the episode's value target (``/value``, in [0, 1]) at that future step

Data mix (the official ``ALOHADataset`` epoch structure, drawn per sample):

- a demonstration sample trains the policy objective only;
- a rollout sample trains the world model or the value function, 50 / 50;
- rollouts come from two pools, successes and failures (the episode's ``success``
  attribute), drawn 50 / 50: the smaller pool is oversampled;
- with rollouts (the planning model): 10 % demonstrations, 90 % rollouts;
- demonstrations only (the policy run): demonstrations also count as success rollouts,
  drawn 50 / 50 as demonstration or rollout: policy 50 %, world model 25 %, value 25 %.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cosmos_policy_ros.learning.episodes import (
    DEFAULT_VALUE_RULE,
    Episode,
    EpisodeFormatError,
    read_episode,
    resample_to_rate,
    value_targets,
)
from cosmos_policy_ros.model.checkpoint import PolicyConfig
from cosmos_policy_ros.model.layout import MODES
from cosmos_policy_ros.model.preprocessing import preprocess_image

__all__ = ["DataMix", "EpisodeDataset", "TrainingDataError", "TrainingSample"]

POLICY, WORLD_MODEL, VALUE = (MODES.index(m) for m in ("policy", "world_model", "value"))


class TrainingDataError(ValueError):
    """An episode folder or file cannot be used for training."""


@dataclass(frozen=True)
class DataMix:
    """Sampling probabilities (see module docstring).

    demo_fraction: P(a sample is a demonstration / policy sample).
    success_fraction: P(success pool | rollout sample) when both pools hold steps.
    world_model_fraction: P(world model | rollout sample), else value.
    demos_as_success_rollouts: demonstrations also fill the success pool.
    """

    demo_fraction: float
    success_fraction: float = 0.5
    world_model_fraction: float = 0.5
    demos_as_success_rollouts: bool = False

    @classmethod
    def official(cls, has_demos: bool, has_rollouts: bool, demo_fraction: float | None = None) -> DataMix:
        """Planning-model mix with rollouts (demos 10 %), policy-run mix without."""
        if has_rollouts:
            default = 0.1 if has_demos else 0.0
            return cls(demo_fraction=default if demo_fraction is None else demo_fraction)
        return cls(demo_fraction=0.5 if demo_fraction is None else demo_fraction, demos_as_success_rollouts=True)

    def __post_init__(self) -> None:
        for name in ("demo_fraction", "success_fraction", "world_model_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise TrainingDataError(f"data mix: {name} = {value}, expected a probability in [0, 1]")


@dataclass(frozen=True)
class TrainingSample:
    """One (s, a, s', V) tuple; joints/actions in robot units, images preprocessed."""

    images: dict[str, np.ndarray]  # camera -> uint8 [S, S, 3]
    future_images: dict[str, np.ndarray]
    joint_positions: np.ndarray  # [dof]
    actions: np.ndarray  # [chunk_size, dof]
    future_joint_positions: np.ndarray  # [dof]
    value: float  # [0, 1]
    task: str
    source: str  # demo | rollout


@dataclass
class _Episode:
    """One episode resampled to the checkpoint's control rate (images stay in the file)."""

    file: Episode
    source: str
    success: bool
    task: str
    joint_positions: np.ndarray  # [T, dof]
    actions: np.ndarray  # [T, dof]
    values: np.ndarray  # [T] in [0, 1]
    image_frames: np.ndarray  # [T] int: frame index in the file per resampled step

    @property
    def num_steps(self) -> int:
        return int(self.joint_positions.shape[0])


def _episode_files(folder: Path) -> list[Path]:
    if not folder.exists():
        raise TrainingDataError(f"{folder}: dataset folder not found")
    if not folder.is_dir():
        raise TrainingDataError(f"{folder}: not a folder (expected a folder of episode_<i>.hdf5 files)")
    files = list(folder.glob("episode_*.hdf5")) or list(folder.glob("*.hdf5"))
    if not files:
        raise TrainingDataError(
            f"{folder}: no episode_*.hdf5 files (expected ALOHA HDF5 episodes, e.g. the output of "
            "`cosmos-policy-ros bags-to-dataset BAGS... --out DIR`)"
        )

    def order(path: Path) -> tuple[int, str]:
        match = re.search(r"(\d+)$", path.stem)
        return (int(match.group(1)) if match else -1, path.name)

    return sorted(files, key=order)


def _load_episode(path: Path, source: str, config: PolicyConfig) -> _Episode:
    try:
        episode = read_episode(path, dof=config.dof, joint_names=config.joint_names, cameras=config.camera_names)
    except EpisodeFormatError as err:
        raise TrainingDataError(str(err)) from err
    success = episode.success
    if success is None:
        if source == "rollout":
            raise TrainingDataError(f"{path}: attribute success missing (a rollout needs its outcome; label it "
                                    "and convert it with `cosmos-policy-ros bags-to-dataset`)")
        success = True  # demonstrations succeed
    values = episode.value
    if values is None:
        # Episodes from other ALOHA tools: the outcome attrs, as the official loader reads them.
        reward = episode.terminal_reward
        values = value_targets(episode.num_steps, float(success) if reward is None else reward, episode.gamma,
                               DEFAULT_VALUE_RULE)
    rate = episode.control_rate_hz or config.control_rate_hz
    rows, frames = resample_to_rate(
        np.concatenate([episode.qpos, episode.action, np.asarray(values, np.float64)[:, None]], axis=1),
        rate, config.control_rate_hz,
    )
    dof = config.dof
    return _Episode(
        file=episode, source=source, success=bool(success), task=episode.task,
        joint_positions=rows[:, :dof], actions=rows[:, dof : 2 * dof], values=np.clip(rows[:, -1], 0.0, 1.0),
        image_frames=frames,
    )


class EpisodeDataset:
    """Every control step of every episode, addressable as sample i = (episode, step).

    demo_dirs / rollout_dirs: folders of ALOHA HDF5 episodes (``bags-to-dataset``
    output). task_override: use this task's embedding for every episode (else each
    episode's ``task_description`` attr, empty -> the checkpoint's default task).
    """

    def __init__(
        self,
        config: PolicyConfig,
        demo_dirs: Sequence[str | Path] = (),
        rollout_dirs: Sequence[str | Path] = (),
        task_override: str = "",
    ) -> None:
        if not demo_dirs and not rollout_dirs:
            raise TrainingDataError("no training data: give demonstrations (--data DIR) and/or rollouts (--rollouts DIR)")
        self.config = config
        self.episodes: list[_Episode] = []
        for source, folders in (("demo", demo_dirs), ("rollout", rollout_dirs)):
            for folder in folders:
                for path in _episode_files(Path(folder)):
                    episode = _load_episode(path, source, config)
                    episode.task = task_override or episode.task or config.default_task
                    self.episodes.append(episode)
        self._index = [(e, t) for e, ep in enumerate(self.episodes) for t in range(ep.num_steps)]
        self._frames: dict[tuple, np.ndarray] = {}  # preprocessed frames, oldest first
        # per camera: the last few decoded frames (episode, raw, preprocessed); a sample reads
        # its current and its future frame, so two streams interleave
        self._recent_raw: dict[tuple, list[tuple]] = {}

    FRAME_CACHE_SIZE = 4096  # preprocessed frames kept (200 MB at 128 px)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def tasks(self) -> set[str]:
        return {ep.task for ep in self.episodes}

    def key(self, i: int) -> tuple[int, int]:
        return self._index[i]

    def source(self, i: int) -> str:
        return self.episodes[self._index[i][0]].source

    def pools(self, mix: DataMix) -> dict[str, np.ndarray]:
        """Sample indices of the ``demo``, ``success`` and ``failure`` pools under ``mix``."""
        demo, success, failure = [], [], []
        for i, (e, _) in enumerate(self._index):
            ep = self.episodes[e]
            if ep.source == "demo":
                demo.append(i)
                if mix.demos_as_success_rollouts:
                    success.append(i)
            else:
                (success if ep.success else failure).append(i)
        return {name: np.array(pool, np.int64) for name, pool in
                (("demo", demo), ("success", success), ("failure", failure))}

    def _image(self, episode: _Episode, camera: str, step: int, center_crop: bool) -> np.ndarray:
        # Cameras slower than the control rate hold frames, and each frame is a sample's
        # current and a later sample's future image: decode and resize each once.
        key = (id(episode), camera, int(episode.image_frames[step]), center_crop)
        image = self._frames.get(key)
        if image is None:
            raw = episode.file.frame(camera, key[2])
            recent = self._recent_raw.setdefault((camera, center_crop), [])
            image = next((img for ep_id, old, img in recent if ep_id == key[0] and np.array_equal(old, raw)), None)
            if image is None:  # else a held frame: the camera had not refreshed
                cfg = self.config
                image = preprocess_image(raw, cfg.image_size, cfg.center_crop_area if center_crop else None,
                                         cfg.jpeg_quality, crop_box=cfg.crop_box)
                image.setflags(write=False)
                recent.append((key[0], raw, image))
                del recent[:-4]
            if len(self._frames) >= self.FRAME_CACHE_SIZE:
                self._frames.pop(next(iter(self._frames)))
            self._frames[key] = image
        return image

    def sample(self, i: int, with_images: bool = True, center_crop: bool = True) -> TrainingSample:
        """Sample ``i``; ``center_crop=False`` leaves images at the model's size uncropped
        (augmentation crops them instead)."""
        e, t = self._index[i]
        ep = self.episodes[e]
        chunk = self.config.chunk_size
        last = ep.num_steps - 1
        future = min(t + chunk, last)
        action_steps = np.minimum(np.arange(t, t + chunk), last)
        cams = self.config.camera_names if with_images else ()
        return TrainingSample(
            images={cam: self._image(ep, cam, t, center_crop) for cam in cams},
            future_images={cam: self._image(ep, cam, future, center_crop) for cam in cams},
            joint_positions=ep.joint_positions[t].copy(),
            actions=ep.actions[action_steps].copy(),
            future_joint_positions=ep.joint_positions[future].copy(),
            value=float(ep.values[future]),
            task=ep.task,
            source=ep.source,
        )

    def close(self) -> None:
        for episode in self.episodes:
            episode.file.close()


class MixSampler:
    """Draws (sample index, objective) pairs with a ``DataMix`` from a torch generator."""

    def __init__(self, dataset: EpisodeDataset, mix: DataMix) -> None:
        self.mix = mix
        self.pools = {k: torch.from_numpy(v) for k, v in dataset.pools(mix).items()}
        sizes = {k: len(v) for k, v in self.pools.items()}
        rollouts = sizes["success"] + sizes["failure"]
        if sizes["demo"] == 0 and rollouts == 0:
            raise TrainingDataError("the dataset holds no samples")
        p_demo = mix.demo_fraction if sizes["demo"] and rollouts else float(sizes["demo"] > 0)
        if sizes["success"] and sizes["failure"]:
            p_success = mix.success_fraction
        else:
            p_success = float(sizes["success"] > 0)
        self.probabilities = {"demo": p_demo, "success": (1 - p_demo) * p_success,
                              "failure": (1 - p_demo) * (1 - p_success)}

    def draw(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indices [count], modes [count])`` (modes index ``MODES``)."""
        u_pool, u_step, u_mode = torch.rand(3, count, generator=generator, dtype=torch.float64)
        p = self.probabilities
        pool = torch.where(u_pool < p["demo"], 0, torch.where(u_pool < p["demo"] + p["success"], 1, 2))
        indices = torch.zeros(count, dtype=torch.long)
        for k, name in enumerate(("demo", "success", "failure")):
            members = self.pools[name]
            sel = pool == k
            if sel.any():
                pick = (u_step[sel] * len(members)).long().clamp(max=len(members) - 1)
                indices[sel] = members[pick]
        rollout_mode = torch.where(u_mode < self.mix.world_model_fraction, WORLD_MODEL, VALUE)
        modes = torch.where(pool == 0, POLICY, rollout_mode)
        return indices, modes
