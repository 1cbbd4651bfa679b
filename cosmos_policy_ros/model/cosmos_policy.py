"""``CosmosPolicy``: the ``Policy`` implementation on top of a checkpoint folder, plus
the batched APIs the planner uses.

Pipeline for one observation (each stage timed in ``last_timings``, seconds):

1. ``preprocess``: images -> JPEG round trip (optional), resize, 90%-area center crop.
2. ``vae_encode``: the raw video (blank frame, then 4 copies of each slot's image or a
   black placeholder) -> Wan2.1 latents, normalized; the normalized proprio is injected
   into its frame. Result: ``EncodedObservation`` (done once per observation). Only the
   frames up to the last clean condition of policy / world-model mode are encoded (the
   Wan VAE is causal: 1 + 4k raw frames give the same first 1 + k latent frames); the
   rest is zero and never read (noise in policy mode, the injected chunk in world-model
   mode, sampled frames in value mode). The full placeholder sequence, needed only to
   decode future images, is encoded when first asked for.
3. ``denoise``: the multistep sampler in the requested mode (policy / world model / value).
4. ``decode``: optional, future camera images decoded from the sample.

Stable planner-facing API (see the method docstrings):

- ``encode_observation(obs) -> EncodedObservation``
- ``sample_candidates(obs_or_encoded, num_candidates, seed) -> list[CosmosPolicyOutput]``
  (one batched sampler call; candidate i uses seed s + i, drawn alone, as the official
  best-of-N, so candidate i equals ``infer`` with seed s + i; each output carries its raw
  action latent frame)
- ``predict_outcomes(obs_or_encoded, action_chunks [N, horizon, dof], num_future_samples,
  num_value_samples, seed, action_latents=None) -> OutcomePrediction`` (world model then
  value, batched over all candidates x ensemble members with the official per-member step
  counts and seeds), meant for the planning-model instance.

Precision follows the official code in the model's dtype: VAE latents are normalized as
``(mu - mean) * (1 / std)`` with mean and 1/std in that dtype (bf16 on a GPU), and the
network is fed its timestep in that dtype (``denoiser.py``).

An ``EncodedObservation`` made by the policy model can be passed to the planning model
when both use the same VAE and preprocessing (true for the released ALOHA pair).
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..types import Observation, PolicyOutput
from .checkpoint import CosmosCheckpoint, PolicyConfig
from .denoiser import COMPILE_DEFAULT, Denoiser, TorchDenoiser, compile_enabled
from .layout import extract, inject
from .preprocessing import preprocess_image
from .sampler import MultistepSampler, seeded_noise

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedObservation:
    """An observation in latent space, ready for any mode.

    latents: ``[1, 16, T, h, w]`` float32, normalized VAE latents with the normalized
        proprio injected (the clean condition values).
    placeholder_latents: ``[1, 16, T, h, w]`` the same before injection (black frames),
        used to decode images without the injected vectors' artifacts; only the first
        ``encoded_frames`` frames are encoded (``CosmosPolicy.decode_placeholders``
        gives the full sequence).
    text_embedding: ``[1, L, D]``.
    encoded_frames: latent frames actually VAE-encoded (the rest are zeros).
    """

    latents: torch.Tensor
    placeholder_latents: torch.Tensor
    text_embedding: torch.Tensor
    joint_positions: np.ndarray
    model_images: dict[str, np.ndarray]
    stamp_ns: int = 0
    task: str = ""
    encoded_frames: int | None = None  # None: all frames
    cache: dict = field(default_factory=dict, compare=False, repr=False)

    def to(self, device: torch.device | str) -> "EncodedObservation":
        """The same observation with its tensors on ``device`` (for a replica on another GPU)."""
        return replace(self, latents=self.latents.to(device), placeholder_latents=self.placeholder_latents.to(device),
                       text_embedding=self.text_embedding.to(device))


@dataclass(frozen=True)
class CosmosPolicyOutput(PolicyOutput):
    """A ``PolicyOutput`` plus the raw generated action latent frame ``[C, h, w]`` float32
    (normalized latent space, before extraction), which the official world model is
    conditioned on when the planner scores this candidate."""

    action_latent: torch.Tensor | None = None


ENSEMBLE_SCHEDULES = ("linspace", "full")


def ensemble_step_counts(num_steps: int, members: int, schedule: str = "linspace") -> list[int]:
    """Denoising steps of each ensemble member.

    "linspace" (official ALOHA planning): ``int(linspace(1, num_steps, members))``, e.g.
    1, 3, 5 for 3 world-model members and 1, 2, 3, 4, 5 for 5 value members of a 5-step
    checkpoint; one member (no ensemble) takes ``num_steps``. "full": every member
    takes ``num_steps``.
    """
    if schedule not in ENSEMBLE_SCHEDULES:
        raise ValueError(f"ensemble step schedule {schedule!r}: expected one of {ENSEMBLE_SCHEDULES}")
    if schedule == "full" or members == 1:
        return [num_steps] * members
    return [int(n) for n in np.linspace(1, num_steps, members).astype(int)]


@dataclass(frozen=True)
class OutcomePrediction:
    """World-model and value predictions for N action chunks.

    future_joint_positions: ``[N, S, dof]`` predicted proprio after each chunk, robot units.
    values: ``[N, S, V]`` predicted value in [0, 1] for each of S future samples x V value samples.
    future_images: camera -> uint8 ``[N, S, H, W, 3]`` when decoding was requested.
    """

    future_joint_positions: np.ndarray
    values: np.ndarray
    future_images: dict[str, np.ndarray] = field(default_factory=dict)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


class CosmosPolicy:
    """Cosmos Policy on one checkpoint; implements ``Policy`` (``infer``, ``reset``)."""

    def __init__(
        self,
        checkpoint: CosmosCheckpoint,
        seed: int | None = None,
        decode_future_images: bool = True,
        denoiser: Denoiser | None = None,
        max_batch_size: int | None = None,
        compile: bool | str = COMPILE_DEFAULT,
        encode_conditioned_only: bool = True,
    ) -> None:
        """``compile``: ``"auto"`` (CUDA only), true or false: ``torch.compile`` the torch
        denoiser and warm it up here (see ``denoiser.py``). ``encode_conditioned_only``:
        VAE-encode only the frames up to the last condition frame (see the module docstring)."""
        if checkpoint.vae is None:
            raise ValueError("CosmosPolicy needs a checkpoint loaded with its VAE")
        self.checkpoint = checkpoint
        self.config: PolicyConfig = checkpoint.config
        self.stats = checkpoint.stats
        self.vae = checkpoint.vae
        self.denoiser: Denoiser = denoiser if denoiser is not None else TorchDenoiser(checkpoint.transformer)
        self.sampler = MultistepSampler(self.config.sampler)
        self.seed = self.config.seed if seed is None else int(seed)  # None: the checkpoint's (official ALOHA: 195)
        self.decode_future_images = decode_future_images
        self.max_batch_size = max_batch_size
        self.last_timings: dict[str, float] = {}
        vae_param = next(self.vae.parameters())
        self.device, self.dtype = vae_param.device, vae_param.dtype
        self.temporal_factor = 2 ** sum(self.vae.config.temperal_downsample)
        z_dim = self.vae.config.z_dim
        # As the official Wan tokenizer: mean and 1/std held in the model dtype, 1/std computed in it.
        std = torch.tensor(self.vae.config.latents_std, dtype=self.dtype, device=self.device)
        self._latents_mean = torch.tensor(self.vae.config.latents_mean, dtype=self.dtype, device=self.device)
        self._latents_mean = self._latents_mean.view(1, z_dim, 1, 1, 1)
        self._latents_inv_std = (1.0 / std).view(1, z_dim, 1, 1, 1)
        self.encode_conditioned_only = encode_conditioned_only
        self._preprocess_pool: ThreadPoolExecutor | None = None
        self.compile_report: dict[str, object] = {"enabled": False}
        if compile_enabled(compile, self.device) and isinstance(self.denoiser, TorchDenoiser):
            self.compile_denoiser()

    def compile_denoiser(self, backend: str = "inductor", mode: str | None = None) -> bool:
        """Compile the torch denoiser and warm it up at this checkpoint's shapes (logged)."""
        if not isinstance(self.denoiser, TorchDenoiser):
            raise TypeError(f"compile_denoiser: the denoiser is a {type(self.denoiser).__name__}, not a TorchDenoiser")
        ok = self.denoiser.compile(self._example_inputs, backend=backend, mode=mode)
        self.compile_report = {"enabled": True, "compiled": ok, "seconds": self.denoiser.compile_seconds,
                               "error": self.denoiser.compile_error}
        if ok:
            log.info("compiled denoiser ready after %.1f s warm-up", self.denoiser.compile_seconds or 0.0)
        return ok

    def _example_inputs(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Denoiser inputs at this checkpoint's shapes (float32, as the sampler passes them)."""
        frames, size = self.config.layout.num_frames, self.config.image_size // 8
        text = next(iter(self.checkpoint.text_embeddings.values()))
        gen = torch.Generator().manual_seed(0)
        cond = self.config.layout.condition_frames("policy").float()
        return (
            torch.randn(batch, self.vae.config.z_dim, frames, size, size, generator=gen),
            (1.0 - cond).expand(batch, frames) * self.config.sampler.sigma_max,
            cond.expand(batch, frames),
            text.float().unsqueeze(0).expand(batch, -1, -1),
        )

    def conditioned_prefix(self) -> int:
        """Latent frames that policy / world-model mode read from the encoding: up to the
        last clean condition frame, not counting the action frame (the chunk is injected)."""
        layout = self.config.layout
        action = layout.index_of_kind("action")
        read = {i for mode in ("policy", "world_model")
                for i, clean in enumerate(layout.condition_frames(mode).tolist()) if clean and i != action}
        return max(read) + 1

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        **kwargs,
    ) -> "CosmosPolicy":
        """Load a checkpoint folder; bf16 on CUDA, fp32 on CPU unless ``dtype`` is given."""
        device = torch.device(device) if device is not None else default_device()
        dtype = dtype or default_dtype(device)
        return cls(CosmosCheckpoint.from_pretrained(folder, device=device, dtype=dtype), **kwargs)

    # ------------------------------------------------------------------ Policy
    def reset(self) -> None:
        """No episode state: every query is seeded with ``self.seed`` (as the official deploy)."""
        self.last_timings = {}

    def infer(self, observation: Observation) -> PolicyOutput:
        return self.sample_candidates(observation, num_candidates=1, seed=self.seed)[0]

    # ------------------------------------------------------------------ encoding
    def text_embedding(self, task: str) -> torch.Tensor:
        task = task or self.config.default_task
        table = self.checkpoint.text_embeddings
        if task not in table:
            known = sorted(table)[:10]
            raise KeyError(
                f"task {task!r} has no precomputed T5 embedding in this checkpoint; known tasks include {known}"
            )
        return table[task].to(self.device, torch.float32).unsqueeze(0)

    def preprocess(self, observation: Observation) -> dict[str, np.ndarray]:
        cfg = self.config
        missing = [cam for cam in cfg.camera_names if cam not in observation.images]
        if missing:
            raise KeyError(f"observation lacks camera images {missing}; the model needs {list(cfg.camera_names)}")
        def one(cam: str) -> np.ndarray:
            return preprocess_image(observation.images[cam], cfg.image_size, cfg.center_crop_area, cfg.jpeg_quality,
                                    stored_image_size=cfg.stored_image_size, crop_box=cfg.crop_box)

        if len(cfg.camera_names) == 1:
            return {cam: one(cam) for cam in cfg.camera_names}
        # One thread per camera: PIL's and torch's resizes release the GIL (3 cameras: ~3x
        # less preprocessing time on the chunk's critical path).
        if self._preprocess_pool is None:
            self._preprocess_pool = ThreadPoolExecutor(len(cfg.camera_names), thread_name_prefix="preprocess")
        return dict(zip(cfg.camera_names, self._preprocess_pool.map(one, cfg.camera_names)))

    def _raw_video(self, images: dict[str, np.ndarray]) -> torch.Tensor:
        """uint8 video ``[1, 3, 1 + 4 (T-1), S, S]`` in the layout's order."""
        size = self.config.image_size
        black = np.zeros((size, size, 3), np.uint8)
        frames: list[np.ndarray] = []
        for slot in self.config.layout.slots:
            if slot.kind == "blank":
                frames.append(black)
                continue
            frame = images[slot.camera] if slot.kind == "image" else black
            frames.extend([frame] * self.temporal_factor)
        video = torch.from_numpy(np.stack(frames))  # [F, S, S, 3]
        return video.permute(3, 0, 1, 2).unsqueeze(0)

    @torch.no_grad()
    def encode_video(self, video_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, 3, F, S, S]`` -> normalized latents ``[B, 16, T, S/8, S/8]`` float32
        (normalized in the model dtype, as the official tokenizer)."""
        pixels = video_uint8.to(self.device, self.dtype) / 127.5 - 1.0
        mu = self.vae.encode(pixels).latent_dist.mode().to(self.dtype)
        return ((mu - self._latents_mean) * self._latents_inv_std).float()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalized latents ``[B, 16, T, h, w]`` -> uint8 video ``[B, F, H, W, 3]``."""
        z = latents.to(self.device, self.dtype) / self._latents_inv_std + self._latents_mean
        video = self.vae.decode(z).sample.float()
        return ((video + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1).cpu()

    @torch.no_grad()
    def encode_observation(self, observation: Observation) -> EncodedObservation:
        """Preprocess and VAE-encode once; reuse for any number of candidates/modes."""
        start = time.perf_counter()
        images = self.preprocess(observation)
        joints = np.asarray(observation.joint_positions, np.float64)
        if joints.shape != (self.config.dof,):
            raise ValueError(f"joint_positions has shape {joints.shape}, expected ({self.config.dof},)")
        text = self.text_embedding(observation.task)
        video = self._raw_video(images)
        t_pre = time.perf_counter()
        layout = self.config.layout
        frames = layout.num_frames
        if self.encode_conditioned_only and not self.decode_future_images:
            frames = self.conditioned_prefix()
        if frames < layout.num_frames:
            head = self.encode_video(video[:, :, : 1 + (frames - 1) * self.temporal_factor])
            rest = head.new_zeros(*head.shape[:2], layout.num_frames - frames, *head.shape[3:])
            placeholder = torch.cat([head, rest], dim=2)
        else:
            placeholder = self.encode_video(video)
        latents = placeholder
        if layout.has_kind("proprio"):
            proprio = torch.from_numpy(self.stats.normalize_proprio(joints)).float().to(latents.device)
            latents = inject(latents, layout.index_of_kind("proprio"), proprio)
        t_enc = time.perf_counter()
        self.last_timings = {"preprocess": t_pre - start, "vae_encode": t_enc - t_pre}
        return EncodedObservation(
            latents=latents,
            placeholder_latents=placeholder,
            text_embedding=text,
            joint_positions=joints,
            model_images=images,
            stamp_ns=observation.stamp_ns,
            task=observation.task,
            encoded_frames=frames,
        )

    def decode_placeholders(self, encoded: EncodedObservation) -> torch.Tensor:
        """The fully encoded placeholder latents ``[1, 16, T, h, w]`` (encoded on first use)."""
        if encoded.encoded_frames is None or encoded.encoded_frames >= self.config.layout.num_frames:
            return encoded.placeholder_latents
        if "placeholder_latents" not in encoded.cache:
            encoded.cache["placeholder_latents"] = self.encode_video(self._raw_video(encoded.model_images))
        return encoded.cache["placeholder_latents"]

    def _encoded(self, obs: Observation | EncodedObservation) -> EncodedObservation:
        return obs if isinstance(obs, EncodedObservation) else self.encode_observation(obs)

    # ------------------------------------------------------------------ sampling
    def _sample(
        self, clean: torch.Tensor, text: torch.Tensor, mode: str, seeds: list[int],
        num_steps: int | list[int] | None = None,
    ) -> torch.Tensor:
        """Batched sampling; sample k starts from its own ``[1, ...]`` noise draw of
        ``seeds[k]`` (as the official code, which samples one at a time) and takes
        ``num_steps[k]`` steps (default: the checkpoint's count for ``mode``).
        ``max_batch_size`` splits the batch without changing any sample's noise or steps."""
        batch = clean.shape[0]
        if len(seeds) != batch:
            raise ValueError(f"{len(seeds)} seeds for a batch of {batch}")
        noise = seeded_noise(tuple(clean.shape[1:]), seeds).to(clean.device)
        cond = self.config.layout.condition_frames(mode)
        steps = self.config.num_steps[mode] if num_steps is None else num_steps
        steps = [steps] * batch if isinstance(steps, int) else list(steps)
        size = self.max_batch_size or batch
        parts = [
            self.sampler.sample(
                self.denoiser, clean[i : i + size], cond, text.expand(min(size, batch - i), -1, -1),
                steps[i : i + size], noise[i : i + size],
            )
            for i in range(0, batch, size)
        ]
        return torch.cat(parts)

    def _decode_future_images(self, samples: torch.Tensor, encoded: EncodedObservation) -> dict[str, np.ndarray]:
        """Camera -> uint8 ``[B, H, W, 3]`` from the future image slots of ``samples``."""
        layout = self.config.layout
        future = layout.image_slots(future=True)
        if not future:
            return {}
        # Vector frames decode to artifacts; put the black placeholders back (as upstream).
        restore = torch.tensor([slot.kind != "image" for slot in layout.slots], device=samples.device)
        clean = self.decode_placeholders(encoded).to(samples.device).expand_as(samples)
        latents = torch.where(restore[None, None, :, None, None], clean, samples)
        last = max(i for i, _ in future)
        # The Wan VAE decodes causally: frames after the last image slot do not matter.
        video = self.decode_latents(latents[:, :, : last + 1])
        return {slot.camera: video[:, (i - 1) * self.temporal_factor + 1].numpy() for i, slot in future}

    @torch.no_grad()
    def sample_candidates(
        self, observation: Observation | EncodedObservation, num_candidates: int, seed: int | None = None
    ) -> list[CosmosPolicyOutput]:
        """Policy mode, ``num_candidates`` samples in one batched sampler call.

        Candidate i is sampled from seed ``seed + i`` (its own ``[1, ...]`` draw, as the
        official best-of-N deployment), so candidate 0 is what ``infer`` returns for
        ``seed``. Each output has ``actions [chunk_size, dof]`` (robot units),
        ``predicted_value`` in [0, 1], ``future_joint_positions [dof]``, ``action_latent``
        (the raw generated action frame ``[C, h, w]``, for the planner's world model) and,
        when ``decode_future_images``, ``future_images`` (camera -> uint8 ``[S, S, 3]``).
        """
        if num_candidates < 1:
            raise ValueError("num_candidates must be >= 1")
        seed = self.seed if seed is None else seed
        start = time.perf_counter()
        encoded = self._encoded(observation)
        timings = dict(self.last_timings) if not isinstance(observation, EncodedObservation) else {}
        cfg, layout = self.config, self.config.layout
        t_den = time.perf_counter()
        clean = encoded.latents.expand(num_candidates, -1, -1, -1, -1)
        samples = self._sample(clean, encoded.text_embedding, "policy", [seed + i for i in range(num_candidates)])
        timings["denoise"] = time.perf_counter() - t_den
        n_act = cfg.chunk_size * cfg.dof
        action_index = layout.index_of_kind("action")
        action_latents = samples[:, :, action_index].float()
        actions = extract(samples, action_index, n_act).double().cpu().numpy()
        actions = self.stats.unnormalize_actions(actions.reshape(num_candidates, cfg.chunk_size, cfg.dof))
        values = self.stats.unnormalize_value(extract(samples, layout.index_of_kind("value"), 1)[:, 0].double().cpu().numpy())
        future_joints = None
        if layout.has_kind("proprio", future=True):
            fp = extract(samples, layout.index_of_kind("proprio", future=True), cfg.dof).double().cpu().numpy()
            future_joints = self.stats.unnormalize_proprio(fp)
        t_dec = time.perf_counter()
        images = self._decode_future_images(samples, encoded) if self.decode_future_images else {}
        timings["decode"] = time.perf_counter() - t_dec
        timings["total"] = time.perf_counter() - start
        self.last_timings = timings
        return [
            CosmosPolicyOutput(
                actions=actions[i],
                predicted_value=float(values[i]),
                future_joint_positions=None if future_joints is None else future_joints[i],
                future_images={cam: frames[i] for cam, frames in images.items()},
                action_latent=action_latents[i],
            )
            for i in range(num_candidates)
        ]

    def _world_model_input(
        self, encoded: EncodedObservation, chunks: np.ndarray, action_latents: torch.Tensor | np.ndarray | None
    ) -> torch.Tensor:
        """``[N, C, T, h, w]`` clean latents for the world model: the observation with the
        candidates' action frames. The official world model is conditioned on the policy's
        raw generated action frame; without it (e.g. a remote caller sent chunks only) the
        normalized chunk is tiled into the frame, as the policy model would have written it."""
        n, layout = chunks.shape[0], self.config.layout
        index = layout.index_of_kind("action")
        latents = encoded.latents.to(self.device)
        if action_latents is None:
            normalized = torch.from_numpy(self.stats.normalize_actions(chunks).reshape(n, -1)).float()
            return inject(latents.expand(n, -1, -1, -1, -1), index, normalized.to(self.device))
        frames = torch.as_tensor(action_latents).to(self.device, torch.float32)
        expected = (n, *latents.shape[1:2], *latents.shape[3:])
        if tuple(frames.shape) != expected:
            raise ValueError(f"action_latents has shape {tuple(frames.shape)}, expected {list(expected)} "
                             "(one raw action latent frame [C, h, w] per candidate)")
        if not torch.isfinite(frames).all():
            raise ValueError("action_latents contains NaN or inf")
        clean = latents.expand(n, -1, -1, -1, -1).clone()
        clean[:, :, index] = frames
        return clean

    @torch.no_grad()
    def predict_outcomes(
        self,
        observation: Observation | EncodedObservation,
        action_chunks: np.ndarray,
        num_future_samples: int = 1,
        num_value_samples: int = 1,
        seed: int | None = None,
        decode_future_images: bool = False,
        action_latents: torch.Tensor | np.ndarray | None = None,
        ensemble_steps: str = "linspace",
    ) -> OutcomePrediction:
        """World model p(s' | s, a) then value p(V | ..., s') for N candidate chunks.

        action_chunks: ``[N, chunk_size, dof]`` robot units. action_latents: optional
        ``[N, C, h, w]`` raw action frames from ``sample_candidates`` (what the official
        world model sees); without them the chunks are tiled into the action frame.

        As the official ALOHA planner: candidate c's world-model member i uses seed
        ``seed + c + i`` and value member j (for each of its future states) seed
        ``seed + c + j``, each drawn alone; member step counts follow ``ensemble_steps``
        (``ensemble_step_counts``: 1, 3, 5 and 1..5 for 3 x 5 members of a 5-step
        checkpoint). All N x S world-model samples run in one batched sampler call and
        all N x S x V value samples in one more; members still running at a step share
        its forward pass.
        """
        seed = self.seed if seed is None else seed
        cfg, layout = self.config, self.config.layout
        chunks = np.asarray(action_chunks, np.float64)
        if chunks.ndim != 3 or chunks.shape[1:] != (cfg.chunk_size, cfg.dof):
            raise ValueError(f"action_chunks has shape {chunks.shape}, expected [N, {cfg.chunk_size}, {cfg.dof}]")
        if num_future_samples < 1 or num_value_samples < 1:
            raise ValueError("num_future_samples and num_value_samples must be >= 1")
        world_steps = ensemble_step_counts(cfg.num_steps["world_model"], num_future_samples, ensemble_steps)
        value_steps = ensemble_step_counts(cfg.num_steps["value"], num_value_samples, ensemble_steps)
        encoded = self._encoded(observation)
        n, s, v = chunks.shape[0], num_future_samples, num_value_samples
        timings = dict(self.last_timings) if not isinstance(observation, EncodedObservation) else {}
        t0 = time.perf_counter()
        clean = self._world_model_input(encoded, chunks, action_latents).repeat_interleave(s, dim=0)
        text = encoded.text_embedding.to(self.device)
        world = self._sample(clean, text, "world_model", [seed + c + i for c in range(n) for i in range(s)],
                             world_steps * n)
        t1 = time.perf_counter()
        value_in = world.repeat_interleave(v, dim=0)
        value_seeds = [seed + c + j for c in range(n) for _ in range(s) for j in range(v)]
        value_samples = self._sample(value_in, text, "value", value_seeds, value_steps * (n * s))
        t2 = time.perf_counter()
        values = extract(value_samples, layout.index_of_kind("value"), 1)[:, 0].double().cpu().numpy()
        values = self.stats.unnormalize_value(values).reshape(n, s, v)
        if layout.has_kind("proprio", future=True):
            fp = extract(world, layout.index_of_kind("proprio", future=True), cfg.dof).double().cpu().numpy()
            future_joints = self.stats.unnormalize_proprio(fp).reshape(n, s, cfg.dof)
        else:
            future_joints = np.full((n, s, cfg.dof), np.nan)
        images: dict[str, np.ndarray] = {}
        if decode_future_images:
            decoded = self._decode_future_images(world, encoded)
            images = {cam: frames.reshape(n, s, *frames.shape[1:]) for cam, frames in decoded.items()}
        timings.update({"world_model": t1 - t0, "value": t2 - t1})
        self.last_timings = timings
        return OutcomePrediction(future_joint_positions=future_joints, values=values, future_images=images)
