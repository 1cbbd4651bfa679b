"""Fine-tuning a checkpoint folder on ALOHA HDF5 episodes with the Cosmos Policy
objective mix (the ``cosmos-policy-ros train`` subcommand).

Owns: reading training samples out of episode folders, the training objective, the
optimisation loop, checkpointing and resuming. The model pieces (layout, injection,
preconditioning, the checkpoint folder) come from ``cosmos_policy_ros.model``.

One training sample, at the checkpoint's ``control_rate_hz`` (episodes recorded at
another rate are resampled: joints/actions/values linearly, images nearest)::

    s   = current images (every camera of the layout) + joint positions at step t
    a   = the commanded actions of steps t .. t + chunk_size - 1 (last one repeated
          past the episode's end)
    s'  = images + joint positions at step min(t + chunk_size, T - 1)
    V   = the episode's value target (``/value``, in [0, 1]) at that future step

Objective (the official Cosmos Policy recipe; the layout says which frames are clean):

- Each sample gets one mode. Demonstrations: policy p(a, s', V | s) 50 %, world model
  p(s', V | s, a) 25 %, value p(V | s, a, s') 25 % (upstream: every demonstration is
  used once as a policy sample and once as a "success rollout", which is split 50/50
  between world model and value). Rollouts (``--rollouts``): world model 50 %, value
  50 %, never policy: the planning model.
- Noise level per sample, shared by its frames: 70 % log-normal (log sigma ~
  N(log 4, 1.2)), 30 % uniform over [1, 85], times sqrt(number of latent frames)
  (Cosmos-Predict2's ``adjust_video_noise``).
- Condition frames hold their clean latents and are told sigma_conditional (0); every
  other frame is x0 + sigma * eps. Loss: ((1 + sigma) / sigma)^2 * (x0_pred - x0)^2
  (rectified-flow loss weight) on the generated frames only, averaged over all latent
  elements of the batch (condition frames count as zeros, as upstream), times 10.
- AdamW, gradient-norm clipping, bf16 autocast on CUDA (fp32 master weights).

Output: ``--out`` is a normal checkpoint folder (``CosmosCheckpoint.save_pretrained``)
written every ``--save-every`` steps and at the end, plus ``training_log.jsonl``.
The optimizer, step and RNG state go next to it, in ``<out>.training_state.pt``;
``--resume`` continues from there and gives the same losses as an uninterrupted run.

Multi-GPU: launch with ``torchrun --nproc_per_node=N -m cosmos_policy_ros.cli train ...``
(``WORLD_SIZE > 1`` switches on ``torch.distributed`` + DDP); ``--batch-size`` is per
process. Every process draws the global batch from one shared seeded generator and
takes its slice, so the run does not depend on how it is split.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from cosmos_policy_ros.learning.bags_to_dataset import value_targets
from cosmos_policy_ros.model.checkpoint import CheckpointError, CosmosCheckpoint, PolicyConfig
from cosmos_policy_ros.model.denoiser import DenoiserNetwork
from cosmos_policy_ros.model.layout import MODES, inject
from cosmos_policy_ros.model.normalization import NormalizationStats
from cosmos_policy_ros.model.preprocessing import preprocess_image

__all__ = [
    "DEMO_MIX",
    "ROLLOUT_MIX",
    "EpisodeDataset",
    "NoiseConfig",
    "TrainSettings",
    "Trainer",
    "TrainingDataError",
    "TrainingSample",
    "add_train_arguments",
    "generated_frame_loss",
    "run_train",
    "training_state_path",
]

#: Probability of each objective (in ``MODES`` order) for a demonstration sample.
DEMO_MIX: dict[str, float] = {"policy": 0.5, "world_model": 0.25, "value": 0.25}
#: Rollouts train the planning model: world model and value only.
ROLLOUT_MIX: dict[str, float] = {"policy": 0.0, "world_model": 0.5, "value": 0.5}
SOURCES = ("demo", "rollout")
STATE_FORMAT = 1
LOG_FILE = "training_log.jsonl"


class TrainingDataError(ValueError):
    """An episode folder or file cannot be used for training."""


def training_state_path(out_dir: str | Path) -> Path:
    """Where the optimizer/step/RNG state of a run writing ``out_dir`` is kept."""
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}.training_state.pt"


# ---------------------------------------------------------------------------- noise
@dataclass(frozen=True)
class NoiseConfig:
    """Training noise levels (Cosmos Policy's hybrid log-normal / uniform ``HybridEDMSDE``).

    video_noise_multiplier: None -> sqrt(latent frames), as Cosmos-Predict2 with
        ``adjust_video_noise``; 1.0 samples the bare distribution.
    """

    p_mean: float = math.log(4.0)
    p_std: float = 1.2
    lognormal_prob: float = 0.7
    uniform_low: float = 1.0
    uniform_high: float = 85.0
    video_noise_multiplier: float | None = None

    def sample(self, count: int, num_frames: int, generator: torch.Generator) -> torch.Tensor:
        """``[count]`` float32 noise levels (EDM sigma)."""
        use_lognormal = torch.rand(count, generator=generator) < self.lognormal_prob
        lognormal = torch.exp(self.p_mean + self.p_std * torch.randn(count, generator=generator))
        uniform = self.uniform_low + (self.uniform_high - self.uniform_low) * torch.rand(count, generator=generator)
        multiplier = math.sqrt(num_frames) if self.video_noise_multiplier is None else self.video_noise_multiplier
        return torch.where(use_lognormal, lognormal, uniform) * multiplier


def loss_weight(sigma: torch.Tensor) -> torch.Tensor:
    """Per-sigma loss weight of rectified-flow preconditioning (sigma_data 1)."""
    return (1.0 + sigma) ** 2 / sigma**2


def generated_frame_loss(
    x0_pred: torch.Tensor, x0: torch.Tensor, condition_frames: torch.Tensor, sigma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted squared error on the generated (non-condition) frames.

    x0_pred, x0: ``[B, C, T, h, w]``; condition_frames: ``[B, T]`` bool; sigma: ``[B]``.
    Returns ``(per_sample_sum [B], per_sample_count [B])``: the weighted error summed
    over each sample's generated elements and how many elements that is. Condition
    frames contribute exactly nothing (not even a gradient).
    """
    generated = (~condition_frames).to(x0.dtype)[:, None, :, None, None]
    err = (x0_pred.float() - x0.float()) ** 2 * generated
    per_sample = err.sum(dim=(1, 2, 3, 4)) * loss_weight(sigma.float())
    count = generated.sum(dim=(1, 2, 3, 4)) * x0.shape[1] * x0.shape[3] * x0.shape[4]
    return per_sample, count


# ---------------------------------------------------------------------------- data
@dataclass
class _Episode:
    """One episode resampled to the checkpoint's control rate (images stay in the file)."""

    path: Path
    source: str
    task: str
    joint_positions: np.ndarray  # [T, dof]
    actions: np.ndarray  # [T, dof]
    values: np.ndarray  # [T] in [0, 1]
    image_frames: np.ndarray  # [T] int: frame index in the file per resampled step

    @property
    def num_steps(self) -> int:
        return int(self.joint_positions.shape[0])


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


def _resample_index(num_steps: int, file_rate_hz: float, model_rate_hz: float) -> np.ndarray:
    """Fractional file step of each model-rate step."""
    if abs(file_rate_hz - model_rate_hz) < 1e-6 * model_rate_hz:
        return np.arange(num_steps, dtype=np.float64)
    duration_s = (num_steps - 1) / file_rate_hz
    count = int(math.floor(duration_s * model_rate_hz + 1e-9)) + 1
    return np.arange(count, dtype=np.float64) * (file_rate_hz / model_rate_hz)


def _interp_rows(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    lo = np.floor(index).astype(int)
    hi = np.minimum(lo + 1, len(values) - 1)
    frac = (index - lo).reshape(-1, *([1] * (values.ndim - 1)))
    return values[lo] * (1.0 - frac) + values[hi] * frac


def _load_episode(path: Path, source: str, config: PolicyConfig) -> _Episode:
    def bad(field_name: str, expected: str) -> TrainingDataError:
        return TrainingDataError(f"{path}: {field_name} {expected}")

    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise TrainingDataError(f"{path}: not a readable HDF5 file ({err})") from err
    with handle as f:
        for name in ("observations/qpos", "action"):
            if name not in f:
                raise bad(f"dataset /{name}", "missing (expected the ALOHA episode layout)")
        qpos = np.asarray(f["observations/qpos"][()], np.float64)
        action = np.asarray(f["action"][()], np.float64)
        dof = config.dof
        if qpos.ndim != 2 or qpos.shape[1] != dof or qpos.shape[0] < 1:
            raise bad("dataset /observations/qpos", f"has shape {qpos.shape}, expected [T, {dof}] (one column per joint)")
        steps = qpos.shape[0]
        if action.shape != (steps, dof):
            raise bad("dataset /action", f"has shape {action.shape}, expected {(steps, dof)} like /observations/qpos")
        if not (np.all(np.isfinite(qpos)) and np.all(np.isfinite(action))):
            raise bad("datasets /observations/qpos and /action", "contain NaN or inf")
        names = f.attrs.get("joint_names")
        if names is not None:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in np.atleast_1d(names)]
            if tuple(names) != config.joint_names:
                raise bad("attribute joint_names", f"= {names}, expected the checkpoint's {list(config.joint_names)}")
        for cam in config.camera_names:
            key = f"observations/images/{cam}"
            if key not in f:
                raise bad(f"dataset /{key}", f"missing (the checkpoint reads cameras {list(config.camera_names)})")
            shape, dtype = f[key].shape, f[key].dtype
            if len(shape) != 4 or shape[0] != steps or shape[3] != 3 or dtype != np.uint8:
                raise bad(f"dataset /{key}", f"is {dtype} {shape}, expected uint8 [{steps}, H, W, 3] RGB")
        if "value" in f:
            values = np.asarray(f["value"][()], np.float64).reshape(-1)
            if values.shape != (steps,):
                raise bad("dataset /value", f"has shape {values.shape}, expected ({steps},)")
        else:
            # Episodes from other ALOHA tools: the outcome attrs (demonstrations succeed).
            score = f.attrs.get("success_score")
            success = bool(f.attrs.get("success", source == "demo"))
            terminal = float(score) if score is not None else float(success)
            gamma = float(f.attrs.get("gamma", 0.998))
            values = value_targets(steps, terminal, gamma).astype(np.float64)
        rate = float(f.attrs.get("control_rate_hz", config.control_rate_hz))
        if not rate > 0:
            raise bad("attribute control_rate_hz", f"= {rate}, expected a positive number")
        task = f.attrs.get("task_description", "")
        task = task.decode() if isinstance(task, bytes) else str(task)
    index = _resample_index(steps, rate, config.control_rate_hz)
    return _Episode(
        path=path,
        source=source,
        task=task,
        joint_positions=_interp_rows(qpos, index),
        actions=_interp_rows(action, index),
        values=np.clip(_interp_rows(values, index), 0.0, 1.0),
        image_frames=np.clip(np.round(index).astype(int), 0, steps - 1),
    )


class EpisodeDataset:
    """Every control step of every episode as one training sample.

    demo_dirs / rollout_dirs: folders of ALOHA HDF5 episodes (``bags-to-dataset``
    output). Sample i is (episode, step); ``source(i)`` says which mix it trains.
    task_override: use this task's embedding for every episode (else each episode's
    ``task_description`` attr, empty -> the checkpoint's default task).
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
                    if task_override:
                        episode.task = task_override
                    elif not episode.task:
                        episode.task = config.default_task
                    self.episodes.append(episode)
        self._index = [(e, t) for e, ep in enumerate(self.episodes) for t in range(ep.num_steps)]
        self._files: dict[Path, h5py.File] = {}

    def __len__(self) -> int:
        return len(self._index)

    @property
    def tasks(self) -> set[str]:
        return {ep.task for ep in self.episodes}

    def key(self, i: int) -> tuple[int, int]:
        return self._index[i]

    def source(self, i: int) -> str:
        return self.episodes[self._index[i][0]].source

    def sources(self) -> np.ndarray:
        """``[len]`` int: 0 for demonstrations, 1 for rollouts."""
        return np.array([SOURCES.index(self.episodes[e].source) for e, _ in self._index], dtype=np.int64)

    def _image(self, episode: _Episode, camera: str, step: int) -> np.ndarray:
        handle = self._files.get(episode.path)
        if handle is None:
            handle = self._files[episode.path] = h5py.File(episode.path, "r")
        raw = handle[f"observations/images/{camera}"][int(episode.image_frames[step])]
        cfg = self.config
        return preprocess_image(raw, cfg.image_size, cfg.center_crop_area, cfg.jpeg_quality)

    def sample(self, i: int, with_images: bool = True) -> TrainingSample:
        e, t = self._index[i]
        ep = self.episodes[e]
        chunk = self.config.chunk_size
        last = ep.num_steps - 1
        future = min(t + chunk, last)
        action_steps = np.minimum(np.arange(t, t + chunk), last)
        cams = self.config.camera_names if with_images else ()
        return TrainingSample(
            images={cam: self._image(ep, cam, t) for cam in cams},
            future_images={cam: self._image(ep, cam, future) for cam in cams},
            joint_positions=ep.joint_positions[t].copy(),
            actions=ep.actions[action_steps].copy(),
            future_joint_positions=ep.joint_positions[future].copy(),
            value=float(ep.values[future]),
            task=ep.task,
            source=ep.source,
        )

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()


# ---------------------------------------------------------------------------- trainer
@dataclass(frozen=True)
class TrainSettings:
    batch_size: int = 8  # per process
    lr: float = 1e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    warmup_steps: int = 0
    loss_scale: float = 10.0
    seed: int = 0
    noise: NoiseConfig = field(default_factory=NoiseConfig)


@dataclass(frozen=True)
class StepResult:
    step: int
    loss: float
    grad_norm: float
    lr: float
    # objective -> (weighted squared error summed over generated elements, element count)
    objective_sums: dict[str, tuple[float, float]]

    def objective_losses(self) -> dict[str, float]:
        return {m: s / c for m, (s, c) in self.objective_sums.items() if c > 0}


class Trainer:
    """The training loop's state: network, optimizer, RNG, latent cache.

    Single process by default; pass ``rank``/``world_size`` (after
    ``torch.distributed.init_process_group``) to train data-parallel with DDP.
    """

    def __init__(
        self,
        checkpoint: CosmosCheckpoint,
        dataset: EpisodeDataset,
        settings: TrainSettings = TrainSettings(),
        device: str | torch.device = "cpu",
        latent_cache: dict[tuple[int, int], torch.Tensor] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if checkpoint.vae is None:
            raise CheckpointError("training needs the checkpoint's VAE (load it with load_vae=True)")
        if len(dataset) == 0:
            raise TrainingDataError("the dataset holds no samples")
        missing = sorted(dataset.tasks - set(checkpoint.text_embeddings))
        if missing:
            raise TrainingDataError(
                f"tasks {missing} have no precomputed T5 embedding in the checkpoint (known: "
                f"{sorted(checkpoint.text_embeddings)[:10]}); pass --task with a known task"
            )
        self.checkpoint = checkpoint
        self.config = checkpoint.config
        self.layout = checkpoint.config.layout
        self.stats: NormalizationStats = checkpoint.stats
        self.dataset = dataset
        self.settings = settings
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.latent_cache = {} if latent_cache is None else latent_cache
        self.step = 0

        self.vae = checkpoint.vae.to(self.device).eval().requires_grad_(False)
        self.temporal_factor = 2 ** sum(self.vae.config.temperal_downsample)
        z_dim = self.vae.config.z_dim
        self._latents_mean = torch.tensor(self.vae.config.latents_mean, dtype=torch.float32).view(1, z_dim, 1, 1, 1)
        self._latents_std = torch.tensor(self.vae.config.latents_std, dtype=torch.float32).view(1, z_dim, 1, 1, 1)

        transformer = checkpoint.transformer.to(self.device)
        if any(p.dtype != torch.float32 for p in transformer.parameters()):
            transformer = transformer.float()  # fp32 master weights; autocast gives bf16 compute
        transformer = transformer.train().requires_grad_(True)
        self.network = DenoiserNetwork(transformer).train()
        self.model: torch.nn.Module = self.network
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.network, device_ids=ids)
        self.optimizer = torch.optim.AdamW(
            self.network.parameters(), lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay
        )
        self.generator = torch.Generator().manual_seed(settings.seed)
        self._sources = torch.from_numpy(dataset.sources())
        mix = torch.tensor([[DEMO_MIX[m] for m in MODES], [ROLLOUT_MIX[m] for m in MODES]], dtype=torch.float64)
        self._mix_cdf = torch.cumsum(mix, dim=1)
        self._cond = torch.stack([self.layout.condition_frames(m) for m in MODES])  # [3, T]
        embeddings = [checkpoint.text_embeddings[t] for t in sorted(checkpoint.text_embeddings)]
        self._text_len = max(e.shape[0] for e in embeddings)

    # ------------------------------------------------------------------ batches
    def draw_objectives(self, indices: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """Mode index (into ``MODES``) per sample from its source's mix."""
        cdf = self._mix_cdf[self._sources[indices]]  # [B, 3]
        return torch.searchsorted(cdf, uniforms.double().unsqueeze(1), right=True).squeeze(1).clamp(max=len(MODES) - 1)

    def draw_batch(self) -> dict[str, torch.Tensor]:
        """The global batch (all processes), then this process's slice of it."""
        total = self.settings.batch_size * self.world_size
        gen = self.generator
        indices = torch.randint(len(self.dataset), (total,), generator=gen)
        modes = self.draw_objectives(indices, torch.rand(total, generator=gen))
        sigma = self.settings.noise.sample(total, self.layout.num_frames, gen)
        shape = (total, self.vae.config.z_dim, self.layout.num_frames, *self._latent_hw)
        noise = torch.randn(shape, generator=gen)
        part = slice(self.rank * self.settings.batch_size, (self.rank + 1) * self.settings.batch_size)
        return {"indices": indices[part], "modes": modes[part], "sigma": sigma[part], "noise": noise[part]}

    @property
    def _latent_hw(self) -> tuple[int, int]:
        side = self.config.image_size // 8
        return side, side

    # ------------------------------------------------------------------ encoding
    def _raw_video(self, sample: TrainingSample) -> torch.Tensor:
        """uint8 ``[3, 1 + 4 (T-1), S, S]``: each slot's image (current or future) or black."""
        size = self.config.image_size
        black = np.zeros((size, size, 3), np.uint8)
        frames: list[np.ndarray] = [black]
        for slot in self.layout.slots[1:]:
            if slot.kind == "image":
                frame = (sample.future_images if slot.future else sample.images)[slot.camera]
            else:
                frame = black
            frames.extend([frame] * self.temporal_factor)
        return torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2)

    @torch.no_grad()
    def encode(self, indices: Sequence[int], micro_batch: int = 4) -> torch.Tensor:
        """Normalized VAE latents ``[B, 16, T, h, w]`` of the samples' images (placeholders
        black), cached per sample: the VAE is frozen and deterministic (posterior mode)."""
        todo = [int(i) for i in indices if self.dataset.key(int(i)) not in self.latent_cache]
        todo = list(dict.fromkeys(todo))
        for start in range(0, len(todo), micro_batch):
            part = todo[start : start + micro_batch]
            video = torch.stack([self._raw_video(self.dataset.sample(i)) for i in part]).to(self.device)
            pixels = video.float() / 127.5 - 1.0
            latents = self.vae.encode(pixels).latent_dist.mode().float().cpu()
            latents = (latents - self._latents_mean) / self._latents_std
            for i, lat in zip(part, latents):
                self.latent_cache[self.dataset.key(i)] = lat
        return torch.stack([self.latent_cache[self.dataset.key(int(i))] for i in indices])

    def clean_latents(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """x0 with proprio, action chunk, future proprio and value injected, and the text
        embeddings ``[B, L, D]``."""
        latents = self.encode(indices)
        samples = [self.dataset.sample(int(i), with_images=False) for i in indices]
        stats, layout = self.stats, self.layout
        batch = len(samples)

        def vec(values: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray(values, np.float64).reshape(batch, -1)).float()

        if layout.has_kind("proprio"):
            latents = inject(latents, layout.index_of_kind("proprio"), vec(stats.normalize_proprio(np.stack([s.joint_positions for s in samples]))))
        if layout.has_kind("proprio", future=True):
            future = np.stack([s.future_joint_positions for s in samples])
            latents = inject(latents, layout.index_of_kind("proprio", future=True), vec(stats.normalize_proprio(future)))
        actions = stats.normalize_actions(np.stack([s.actions for s in samples]))
        latents = inject(latents, layout.index_of_kind("action"), vec(actions))
        values = stats.normalize_value(np.array([s.value for s in samples]))
        latents = inject(latents, layout.index_of_kind("value"), vec(values))
        texts = []
        for s in samples:
            emb = self.checkpoint.text_embeddings[s.task].float()
            texts.append(torch.nn.functional.pad(emb, (0, 0, 0, self._text_len - emb.shape[0])))
        return latents, torch.stack(texts)

    # ------------------------------------------------------------------ objective
    def _forward(
        self, x0: torch.Tensor, text: torch.Tensor, modes: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dev = self.device
        x0, text, sigma, noise = x0.to(dev), text.to(dev), sigma.to(dev), noise.to(dev)
        cond = self._cond[modes].to(dev)  # [B, T]
        cond5 = cond[:, None, :, None, None]
        x_t = torch.where(cond5, x0, x0 + sigma[:, None, None, None, None] * noise)
        sigma_frames = torch.where(
            cond, torch.full_like(cond, self.config.sampler.sigma_conditional, dtype=torch.float32), sigma[:, None]
        )
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            x0_pred = self.model(x_t, sigma_frames, cond.float(), text)
        return generated_frame_loss(x0_pred, x0, cond, sigma)

    def _lr(self, step: int) -> float:
        warm = self.settings.warmup_steps
        return self.settings.lr * (min(1.0, (step + 1) / warm) if warm > 0 else 1.0)

    def train_step(self) -> StepResult:
        batch = self.draw_batch()
        x0, text = self.clean_latents(batch["indices"].tolist())
        lr = self._lr(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        per_sample, count = self._forward(x0, text, batch["modes"], batch["sigma"], batch["noise"])
        numel = x0[0].numel() * x0.shape[0]
        loss = self.settings.loss_scale * per_sample.sum() / numel
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.settings.grad_clip)
        self.optimizer.step()
        self.step += 1
        sums = torch.zeros(len(MODES), 3, dtype=torch.float64)
        modes = batch["modes"]
        for m in range(len(MODES)):
            sel = modes == m
            sums[m, 0] = per_sample.detach().cpu()[sel].double().sum()
            sums[m, 1] = count.detach().cpu()[sel].double().sum()
        sums[0, 2] = loss.detach().double().cpu()
        if self.world_size > 1:
            import torch.distributed as dist

            reduced = sums.to(self.device)
            dist.all_reduce(reduced)
            sums = reduced.cpu()
            sums[0, 2] /= self.world_size
        return StepResult(
            step=self.step,
            loss=float(sums[0, 2]),
            grad_norm=float(grad_norm),
            lr=lr,
            objective_sums={m: (float(sums[i, 0]), float(sums[i, 1])) for i, m in enumerate(MODES)},
        )

    @torch.no_grad()
    def eval_losses(
        self, indices: Sequence[int], sigmas: Sequence[float] = (0.5, 2.0, 8.0, 32.0), seed: int = 1234
    ) -> dict[str, float]:
        """Per objective, the weighted loss on the generated frames of ``indices`` at fixed
        noise levels and a fixed noise draw (no RNG state is touched): comparable across steps."""
        was_training = self.network.training
        self.network.eval()
        x0, text = self.clean_latents(list(indices))
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(x0.shape, generator=gen)
        result = {}
        for m, mode in enumerate(MODES):
            total = elements = 0.0
            for sigma in sigmas:
                modes = torch.full((len(indices),), m, dtype=torch.long)
                s, c = self._forward(x0, text, modes, torch.full((len(indices),), float(sigma)), noise)
                total += float(s.sum())
                elements += float(c.sum())
            result[mode] = total / elements
        self.network.train(was_training)
        return result

    # ------------------------------------------------------------------ saving
    def save(self, out_dir: str | Path) -> None:
        """Write the checkpoint folder (swapped in whole) and the training state next to it."""
        out_dir = Path(out_dir)
        tmp = out_dir.parent / f".{out_dir.name}.saving"
        old = out_dir.parent / f".{out_dir.name}.old"
        for stale in (tmp, old):
            if stale.exists():
                shutil.rmtree(stale)
        ckpt = self.checkpoint
        CosmosCheckpoint(
            config=ckpt.config, transformer=self.network.transformer, vae=ckpt.vae, stats=self.stats,
            text_embeddings=ckpt.text_embeddings,
        ).save_pretrained(tmp)
        log = out_dir / LOG_FILE
        if log.exists():
            shutil.copy2(log, tmp / LOG_FILE)
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old.exists():
            shutil.rmtree(old)
        state = {
            "format": STATE_FORMAT,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "settings": asdict(self.settings),
            "world_size": self.world_size,
        }
        path = training_state_path(out_dir)
        torch.save(state, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)

    def load_state(self, out_dir: str | Path) -> None:
        path = training_state_path(out_dir)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no training state to resume from (written next to --out by a previous run)")
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{path}: field 'format' = {state.get('format')}, expected {STATE_FORMAT}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])
        saved_batch = state["settings"]["batch_size"] * state["world_size"]
        if saved_batch != self.settings.batch_size * self.world_size and self.rank == 0:
            print(f"[train] note: resuming with global batch {self.settings.batch_size * self.world_size} "
                  f"(saved run used {saved_batch}); the sample order differs from an uninterrupted run", file=sys.stderr)


# ---------------------------------------------------------------------------- CLI
def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default="", help="checkpoint folder to start from (not needed with --resume)")
    parser.add_argument("--data", nargs="+", action="extend", default=[], metavar="DIR",
                        help="demonstration episode folders (train policy 50%%, world model 25%%, value 25%%)")
    parser.add_argument("--rollouts", nargs="+", action="extend", default=[], metavar="DIR",
                        help="rollout episode folders (train world model 50%%, value 50%%: the planning model)")
    parser.add_argument("--out", required=True, help="checkpoint folder to write (training state goes next to it)")
    parser.add_argument("--steps", type=int, default=1000, help="total optimizer steps (default 1000)")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per step and process (default 8)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4, the official recipe)")
    parser.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (default 0.1)")
    parser.add_argument("--warmup-steps", type=int, default=0, help="linear learning-rate warm-up steps (default 0)")
    parser.add_argument("--grad-clip", type=float, default=1.0, help="gradient-norm clip (default 1.0)")
    parser.add_argument("--save-every", type=int, default=500, help="write --out every N steps (default 500; 0: only at the end)")
    parser.add_argument("--log-every", type=int, default=10, help="print per-objective losses every N steps (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of sample order, objectives and noise (default 0)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its saved training state")
    parser.add_argument("--device", default="", help="cpu | cuda (default: cuda when available)")
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


def _train(args: argparse.Namespace, device: torch.device, rank: int, world_size: int) -> int:
    out = Path(args.out)
    main_process = rank == 0
    if args.steps < 1 or args.batch_size < 1:
        raise TrainingDataError(f"--steps and --batch-size must be >= 1 (got {args.steps}, {args.batch_size})")
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
    dataset = EpisodeDataset(checkpoint.config, args.data, args.rollouts, task_override=args.task)
    if args.stats == "dataset" and not args.resume:
        folder = Path((args.data or args.rollouts)[0])
        checkpoint.stats = NormalizationStats.load(folder / "dataset_statistics.json")
        checkpoint.validate(str(folder))
    settings = TrainSettings(
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
        warmup_steps=args.warmup_steps, seed=args.seed,
    )
    trainer = Trainer(checkpoint, dataset, settings, device=device, rank=rank, world_size=world_size)
    if args.resume:
        trainer.load_state(out)
    demos = sum(e.source == "demo" for e in dataset.episodes)
    if main_process:
        print(f"[train] {len(dataset)} samples from {demos} demonstration and {len(dataset.episodes) - demos} rollout "
              f"episodes at {checkpoint.config.control_rate_hz:g} Hz, chunk {checkpoint.config.chunk_size}; "
              f"{world_size} process(es) x batch {args.batch_size} on {device}; "
              f"steps {trainer.step} -> {args.steps}; writing {out}", flush=True)
    if trainer.step >= args.steps:
        if main_process:
            print(f"[train] already at step {trainer.step} >= --steps {args.steps}; nothing to do")
        return 0
    log_path = out / LOG_FILE
    window = {m: [0.0, 0.0, 0] for m in MODES}
    started, window_start = time.perf_counter(), trainer.step
    bar = tqdm(total=args.steps, initial=trainer.step, desc="train", unit="step", disable=not main_process)
    for _ in range(trainer.step, args.steps):
        result = trainer.train_step()
        bar.update(1)
        for m, (s, c) in result.objective_sums.items():
            window[m][0] += s
            window[m][1] += c
            window[m][2] += int(c > 0)
        bar.set_postfix(loss=f"{result.loss:.4f}")
        last = result.step == args.steps
        if main_process and (result.step % max(args.log_every, 1) == 0 or last):
            losses = {m: w[0] / w[1] for m, w in window.items() if w[1] > 0}
            counts = {m: w[2] for m, w in window.items()}
            rate = (result.step - window_start) / max(time.perf_counter() - started, 1e-9)
            tqdm.write(f"[train] step {result.step}/{args.steps}  loss {result.loss:.4f}  "
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
