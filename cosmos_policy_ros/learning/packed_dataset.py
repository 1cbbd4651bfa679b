"""A training dataset packed into one small file, for training on another host.

ALOHA HDF5 episodes keep full camera frames (a 60-episode sim set is ~500 MB), but a
checkpoint only ever sees them preprocessed to its image size. ``pack-dataset`` stores
exactly what ``EpisodeDataset`` would hand the trainer: each episode's resampled joints,
actions and value targets, and each camera's preprocessed frames (center-cropped and
uncropped, the latter for augmentation), each distinct frame once. The same 60 episodes
at 64 px pack into ~2 MB, so a GPU host can train on them without the raw episodes:

    cosmos-policy-ros pack-dataset --checkpoint CKPT --data demos/ --out demos.npz
    cosmos-policy-ros train --checkpoint CKPT --packed demos.npz --out trained/ ...

A pack is bound to the preprocessing settings of the checkpoint it was made for (image
size, crop, JPEG, cameras, joints, control rate); ``train`` refuses a pack made for
other settings and names both. The chunk length is not bound: samples are cut at train time.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cosmos_policy_ros.learning.training_data import (
    EpisodeDataset,
    TrainingDataError,
    _Episode,
)
from cosmos_policy_ros.model.checkpoint import PolicyConfig

PACK_FORMAT = "cosmos_policy_ros.packed_dataset/1"
_VARIANTS = ((True, "crop"), (False, "full"))  # center_crop flag -> array name


def preprocessing_key(config: PolicyConfig) -> dict:
    """The checkpoint settings a pack's contents depend on."""
    return {
        "image_size": int(config.image_size),
        "center_crop_area": config.center_crop_area,
        "jpeg_quality": config.jpeg_quality,
        "stored_image_size": config.stored_image_size,
        "crop_box": None if config.crop_box is None else [float(v) for v in config.crop_box],
        "camera_names": list(config.camera_names),
        "joint_names": list(config.joint_names),
        "control_rate_hz": float(config.control_rate_hz),
    }


def pack_dataset(
    config: PolicyConfig,
    out: str | Path,
    demo_dirs: Sequence[str | Path] = (),
    rollout_dirs: Sequence[str | Path] = (),
    task_override: str = "",
    progress: Callable[[str], None] = print,
    uncropped: bool = True,
) -> dict:
    """Write ``out`` (.npz) from the episode folders; returns its summary.
    ``uncropped=False`` leaves out the frames augmentation needs (half the size; such a
    pack trains with ``--no-augment`` only)."""
    variants = _VARIANTS if uncropped else _VARIANTS[:1]
    dataset = EpisodeDataset(config, demo_dirs, rollout_dirs, task_override=task_override)
    arrays: dict[str, np.ndarray] = {}
    episodes = []
    started = time.perf_counter()
    try:
        for e, ep in enumerate(dataset.episodes):
            arrays[f"e{e}_joints"] = ep.joint_positions
            arrays[f"e{e}_actions"] = ep.actions
            arrays[f"e{e}_values"] = ep.values
            for cam in config.camera_names:
                for center_crop, name in variants:
                    frames: dict[bytes, int] = {}
                    index = np.empty(ep.num_steps, np.int32)
                    stack = []
                    for t in range(ep.num_steps):
                        image = dataset._image(ep, cam, t, center_crop)
                        key = image.tobytes()
                        if key not in frames:
                            frames[key] = len(stack)
                            stack.append(image)
                        index[t] = frames[key]
                    arrays[f"e{e}_{cam}_{name}"] = np.stack(stack)
                    arrays[f"e{e}_{cam}_{name}_index"] = index
            episodes.append({"source": ep.source, "success": bool(ep.success), "task": ep.task,
                             "num_steps": ep.num_steps, "file": str(ep.file.path)})
            if (e + 1) % 10 == 0 or e + 1 == len(dataset.episodes):
                progress(f"[pack] {e + 1}/{len(dataset.episodes)} episodes ({time.perf_counter() - started:.0f} s)")
    finally:
        dataset.close()
    stats = None
    first = Path((list(demo_dirs) or list(rollout_dirs))[0]) / "dataset_statistics.json"
    if first.is_file():
        stats = json.loads(first.read_text())
    meta = {"format": PACK_FORMAT, "preprocessing": preprocessing_key(config), "episodes": episodes,
            "dataset_statistics": stats, "sources": [str(d) for d in (*demo_dirs, *rollout_dirs)]}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return {"episodes": len(episodes), "samples": sum(e["num_steps"] for e in episodes),
            "bytes": out.stat().st_size}


class _PackedFrames:
    """Stands in for an episode file: the pack's frames of one episode."""

    def __init__(self, path: str, frames: dict[tuple[str, bool], tuple[np.ndarray, np.ndarray]]) -> None:
        self.path = path
        self.frames = frames  # (camera, center_crop) -> (frames [U, S, S, 3], index [T])

    def close(self) -> None:
        pass


class PackedDataset(EpisodeDataset):
    """``EpisodeDataset`` read from a ``pack-dataset`` file: the same samples, no HDF5."""

    def __init__(self, config: PolicyConfig, path: str | Path, task_override: str = "") -> None:
        path = Path(path)
        if not path.is_file():
            raise TrainingDataError(f"{path}: packed dataset not found (make one with `cosmos-policy-ros pack-dataset`)")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            meta = json.loads(arrays.pop("meta").tobytes().decode())
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise TrainingDataError(f"{path}: not a packed dataset ({err})") from err
        if meta.get("format") != PACK_FORMAT:
            raise TrainingDataError(f"{path}: format {meta.get('format')!r}, expected {PACK_FORMAT!r}")
        want, have = preprocessing_key(config), meta["preprocessing"]
        diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
        if diff:
            detail = "; ".join(f"{k}: pack {a!r} vs checkpoint {b!r}" for k, (a, b) in diff.items())
            raise TrainingDataError(f"{path}: packed for other preprocessing settings than the checkpoint ({detail}); "
                                    "pack it again with this checkpoint")
        self.config = config
        self.path = path
        self.statistics = meta.get("dataset_statistics")
        self.episodes = []
        for e, info in enumerate(meta["episodes"]):
            frames = {(cam, cc): (arrays[f"e{e}_{cam}_{name}"], arrays[f"e{e}_{cam}_{name}_index"])
                      for cam in config.camera_names for cc, name in _VARIANTS
                      if f"e{e}_{cam}_{name}" in arrays}
            self.episodes.append(_Episode(
                file=_PackedFrames(info["file"], frames), source=info["source"], success=bool(info["success"]),
                task=task_override or info["task"] or config.default_task,
                joint_positions=arrays[f"e{e}_joints"], actions=arrays[f"e{e}_actions"],
                values=arrays[f"e{e}_values"], image_frames=np.arange(info["num_steps"]),
            ))
        if not self.episodes:
            raise TrainingDataError(f"{path}: the pack holds no episodes")
        self._index = [(e, t) for e, ep in enumerate(self.episodes) for t in range(ep.num_steps)]

    def _image(self, episode: _Episode, camera: str, step: int, center_crop: bool) -> np.ndarray:
        try:
            frames, index = episode.file.frames[(camera, center_crop)]
        except KeyError:
            raise TrainingDataError(f"{self.path}: packed without the uncropped frames augmentation needs "
                                    "(pack-dataset --cropped-only); train with --no-augment or pack again") from None
        return frames[index[step]]


def add_pack_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint folder whose preprocessing (image size, crop, cameras) the pack follows")
    parser.add_argument("--data", nargs="+", action="extend", default=[], metavar="DIR",
                        help="demonstration episode folders")
    parser.add_argument("--rollouts", nargs="+", action="extend", default=[], metavar="DIR",
                        help="rollout episode folders (with outcomes)")
    parser.add_argument("--task", default="", help="task of every episode (default: each episode's own)")
    parser.add_argument("--cropped-only", action="store_true",
                        help="leave out the uncropped frames that augmentation needs (half the size; train with "
                             "--no-augment)")
    parser.add_argument("--out", required=True, help="file to write (.npz)")


def run_pack_dataset(args: argparse.Namespace) -> int:
    from cosmos_policy_ros.model.checkpoint import CheckpointError, CosmosCheckpoint

    started = time.perf_counter()
    try:
        config = CosmosCheckpoint.from_pretrained(args.checkpoint, load_vae=False,
                                                  load_transformer_weights=False).config
        summary = pack_dataset(config, args.out, args.data, args.rollouts, task_override=args.task,
                               uncropped=not args.cropped_only)
    except (TrainingDataError, CheckpointError, FileNotFoundError) as err:
        print(f"[pack] error: {err}", file=sys.stderr)
        return 2
    print(f"[pack] wrote {args.out}: {summary['episodes']} episodes, {summary['samples']} samples, "
          f"{summary['bytes'] / 1e6:.1f} MB in {time.perf_counter() - started:.0f} s")
    return 0
