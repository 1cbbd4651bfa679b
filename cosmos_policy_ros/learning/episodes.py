"""The ALOHA HDF5 episode file: the one reader, the one writer, the one resampler, and
the value targets stored in it.

Every part of the package that touches episode files goes through this module:
``bags_to_dataset`` writes them, training reads them (resampled to a checkpoint's
control rate), ``ReplayPolicy`` reads their actions and rate.

Layout (``episode_<i>.hdf5``, what ALOHA/ACT tools and the Cosmos Policy loaders read)::

    /observations/qpos              [T, dof] float64  joint_names order, gripper in [0, 1]
    /observations/qvel              [T, dof] float64  (optional here, written by the converter)
    /observations/effort            [T, dof] float64  (optional)
    /observations/images/<camera>   [T, H, W, 3] uint8 RGB
    /action                         [T, dof] float64  executed commands
    /value                          [T] float32       value targets in [0, 1] (optional)
    /timestamps_ns                  [T] int64         (optional)
    attrs: control_rate_hz (older ALOHA tools: fps), success, success_score, gamma,
           value_rule, task_description, joint_names, and the converter's provenance attrs
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

__all__ = [
    "DEFAULT_GAMMA",
    "DEFAULT_VALUE_RULE",
    "VALUE_RULES",
    "Episode",
    "EpisodeFormatError",
    "EpisodeWriter",
    "read_episode",
    "resample_grid",
    "resample_hold",
    "resample_linear",
    "resample_nearest",
    "resample_to_rate",
    "value_targets",
    "write_episode",
]

#: Discount per control step; the official Cosmos Policy ALOHA recipe's (``gamma=0.998``).
DEFAULT_GAMMA = 0.998
#: ``official``: any positive terminal reward gives the full-success targets
#: ``gamma ** (T - 1 - t)`` (the official loader rescales returns by the reward itself);
#: ``scaled``: targets are ``reward * gamma ** (T - 1 - t)``.
VALUE_RULES = ("official", "scaled")
DEFAULT_VALUE_RULE = "official"
ValueRule = Literal["official", "scaled"]


class EpisodeFormatError(ValueError):
    """An episode file is missing, unreadable or not in the ALOHA layout (names file and field)."""


# --------------------------------------------------------------------------- value targets


def value_targets(
    num_steps: int, terminal_reward: float, gamma: float = DEFAULT_GAMMA, rule: ValueRule = DEFAULT_VALUE_RULE
) -> np.ndarray:
    """Value target of each step of an episode with one reward at its end, in [0, 1].

    ``official`` (default): ``gamma ** (T - 1 - t)`` when ``terminal_reward > 0``, else 0.
    The official loader computes returns ``G_t = r * gamma ** (T - 1 - t)`` and rescales
    them as ``2 * G_t / r - 1`` for ``r > 0`` (``-1`` for ``r = 0``), so a partial score
    gives the same targets as a full success. ``scaled``: ``r * gamma ** (T - 1 - t)``.
    The terminal reward is the outcome's score when labeled with one, else 1 / 0.
    """
    if num_steps <= 0:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    if rule not in VALUE_RULES:
        raise ValueError(f"value rule must be one of {VALUE_RULES}, got {rule!r}")
    reward = float(terminal_reward)
    if rule == "official":
        reward = 1.0 if reward > 0.0 else 0.0
    steps_to_end = np.arange(num_steps - 1, -1, -1, dtype=np.float64)
    return (reward * gamma**steps_to_end).astype(np.float32)


# --------------------------------------------------------------------------- resampling


def resample_grid(num_steps: int, file_rate_hz: float, target_rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Times (s) of a file's steps and of the target-rate grid covering the same span."""
    times = np.arange(num_steps, dtype=np.float64) / file_rate_hz
    if abs(file_rate_hz - target_rate_hz) < 1e-6 * target_rate_hz:
        return times, times.copy()
    duration_s = (num_steps - 1) / file_rate_hz
    count = math.floor(duration_s * target_rate_hz + 1e-9) + 1
    return times, np.arange(count, dtype=np.float64) / target_rate_hz


def resample_linear(grid: np.ndarray, times: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``values [N, ...]`` sampled at ``times [N]`` onto ``grid [T]``
    (held constant outside ``times``)."""
    values = np.asarray(values, np.float64)
    flat = values.reshape(len(values), -1)
    t = np.asarray(times, np.float64)
    g = np.asarray(grid, np.float64)
    out = np.empty((len(g), flat.shape[1]))
    for d in range(flat.shape[1]):
        out[:, d] = np.interp(g, t, flat[:, d])
    return out.reshape(len(g), *values.shape[1:])


def resample_hold(grid: np.ndarray, times: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The last value at or before each grid time (the first one before ``times[0]``)."""
    idx = np.searchsorted(times, grid, side="right") - 1
    return values[np.clip(idx, 0, len(times) - 1)]


def resample_nearest(grid: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index into sorted ``times`` of the sample nearest each grid time (ties: the earlier)."""
    right = np.clip(np.searchsorted(times, grid), 0, len(times) - 1)
    left = np.clip(right - 1, 0, len(times) - 1)
    use_left = np.abs(grid - times[left]) <= np.abs(times[right] - grid)
    return np.where(use_left, left, right)


def resample_to_rate(
    rows: np.ndarray, file_rate_hz: float, target_rate_hz: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a file at one rate -> ``(rows at target rate (linear), nearest file step per
    target step)``; the file's own rows when the rates agree."""
    times, grid = resample_grid(len(rows), file_rate_hz, target_rate_hz)
    return resample_linear(grid, times, rows), resample_nearest(grid, times)


# --------------------------------------------------------------------------- reading


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class Episode:
    """One episode file's arrays and outcome attributes; images stay in the file and are
    read per frame (``frame``) unless loaded with ``load_images=True``."""

    path: Path
    action: np.ndarray  # [T, dof] float64
    qpos: np.ndarray | None  # [T, dof] float64
    qvel: np.ndarray | None = None
    effort: np.ndarray | None = None
    value: np.ndarray | None = None  # [T] in [0, 1]
    timestamps_ns: np.ndarray | None = None
    images: dict[str, np.ndarray] = field(default_factory=dict)  # only with load_images
    image_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    _handle: h5py.File | None = field(default=None, repr=False)

    @property
    def num_steps(self) -> int:
        return int(self.action.shape[0])

    @property
    def control_rate_hz(self) -> float | None:
        """``control_rate_hz`` attr (this package), else ``fps`` (other ALOHA tools), else None."""
        for key in ("control_rate_hz", "fps"):
            if self.attrs.get(key) is not None:
                return float(self.attrs[key])
        return None

    @property
    def success(self) -> bool | None:
        return None if self.attrs.get("success") is None else bool(self.attrs["success"])

    @property
    def terminal_reward(self) -> float | None:
        """``success_score`` when present, else 1 / 0 from ``success`` (as the official loader)."""
        if self.attrs.get("success_score") is not None:
            return float(self.attrs["success_score"])
        return None if self.success is None else float(self.success)

    @property
    def task(self) -> str:
        return _text(self.attrs.get("task_description", ""))

    @property
    def joint_names(self) -> tuple[str, ...] | None:
        names = self.attrs.get("joint_names")
        return None if names is None else tuple(_text(n) for n in np.atleast_1d(names))

    @property
    def gamma(self) -> float:
        return float(self.attrs.get("gamma", DEFAULT_GAMMA))

    def frame(self, camera: str, step: int) -> np.ndarray:
        """uint8 ``[H, W, 3]`` of one camera at one file step (keeps the file open)."""
        if camera in self.images:
            return self.images[camera][step]
        if self._handle is None:
            self._handle = h5py.File(self.path, "r")
        return self._handle[f"observations/images/{camera}"][int(step)]

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def read_episode(
    path: str | os.PathLike[str],
    *,
    load_images: bool = False,
    need_qpos: bool = True,
    dof: int | None = None,
    joint_names: Sequence[str] | None = None,
    cameras: Sequence[str] = (),
) -> Episode:
    """Read and check one episode file. ``dof`` / ``joint_names`` / ``cameras``: what the
    caller needs (a mismatch is an ``EpisodeFormatError`` naming the file and field)."""
    path = Path(path)

    def bad(field_name: str, problem: str) -> EpisodeFormatError:
        return EpisodeFormatError(f"{path}: {field_name} {problem}")

    if not path.exists():
        raise EpisodeFormatError(f"episode file {path} does not exist")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise EpisodeFormatError(f"{path}: not a readable HDF5 file ({err})") from err
    with handle as f:
        for name in ("action", "observations/qpos") if need_qpos else ("action",):
            if name not in f:
                raise bad(f"dataset /{name}", "missing (expected the ALOHA episode layout)")
        action = np.asarray(f["action"][()], np.float64)
        if action.ndim != 2 or action.shape[0] < 1 or (dof is not None and action.shape[1] != dof):
            raise bad("dataset /action", f"has shape {action.shape}, expected [T, {dof or 'dof'}] with T > 0")
        steps, width = action.shape
        qpos = np.asarray(f["observations/qpos"][()], np.float64) if "observations/qpos" in f else None
        if qpos is not None and qpos.shape != (steps, width):
            raise bad("dataset /observations/qpos", f"has shape {qpos.shape}, expected [T, {width}] = {(steps, width)} "
                      "like /action (one column per joint)")
        for name, rows in (("/action", action), ("/observations/qpos", qpos)):
            if rows is not None and not np.all(np.isfinite(rows)):
                raise bad(f"dataset {name}", "contains NaN or inf")
        optional = {}
        for key, name in (("qvel", "observations/qvel"), ("effort", "observations/effort"),
                          ("value", "value"), ("timestamps_ns", "timestamps_ns")):
            optional[key] = f[name][()] if name in f else None
        if optional["value"] is not None:
            optional["value"] = np.asarray(optional["value"], np.float64).reshape(-1)
            if optional["value"].shape != (steps,):
                raise bad("dataset /value", f"has shape {optional['value'].shape}, expected ({steps},)")
        attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()}
        group = f.get("observations/images", {})
        shapes = {cam: tuple(ds.shape) for cam, ds in group.items()}
        for cam in cameras:
            if cam not in shapes:
                raise bad(f"dataset /observations/images/{cam}", f"missing (cameras needed: {list(cameras)})")
            ds = group[cam]
            if len(ds.shape) != 4 or ds.shape[0] != steps or ds.shape[3] != 3 or ds.dtype != np.uint8:
                raise bad(f"dataset /observations/images/{cam}", f"is {ds.dtype} {ds.shape}, "
                          f"expected uint8 [{steps}, H, W, 3] RGB")
        images = {cam: ds[()] for cam, ds in group.items()} if load_images else {}
    episode = Episode(path=path, action=action, qpos=qpos, images=images, image_shapes=shapes, attrs=attrs,
                      **optional)
    if joint_names is not None and episode.joint_names is not None and episode.joint_names != tuple(joint_names):
        raise bad("attribute joint_names", f"= {list(episode.joint_names)}, expected {list(joint_names)}")
    rate = episode.control_rate_hz
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise bad("attribute control_rate_hz", f"= {rate}, expected a positive number")
    return episode


# --------------------------------------------------------------------------- writing


class EpisodeWriter:
    """Writes one episode file atomically (``<path>.tmp`` renamed on a clean exit, removed
    on an error). Images can be written frame by frame through ``image_dataset``."""

    def __init__(self, path: str | os.PathLike[str], compression: str | None = None) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        self.compression = compression
        self._file: h5py.File | None = None

    def __enter__(self) -> EpisodeWriter:
        self._file = h5py.File(self.tmp, "w")
        self._file.create_group("observations/images")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._file is not None
        self._file.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        elif self.tmp.exists():
            self.tmp.unlink()

    @property
    def file(self) -> h5py.File:
        if self._file is None:
            raise RuntimeError("EpisodeWriter used outside its `with` block")
        return self._file

    def write_attrs(self, attrs: Mapping[str, Any]) -> None:
        for key, value in attrs.items():
            if value is not None:
                self.file.attrs[key] = list(value) if isinstance(value, tuple) else value

    def write_arrays(
        self,
        *,
        qpos: np.ndarray,
        action: np.ndarray,
        qvel: np.ndarray | None = None,
        effort: np.ndarray | None = None,
        value: np.ndarray | None = None,
        timestamps_ns: np.ndarray | None = None,
    ) -> None:
        f, comp = self.file, self.compression
        f.create_dataset("observations/qpos", data=np.asarray(qpos, np.float64), compression=comp)
        for name, rows in (("observations/qvel", qvel), ("observations/effort", effort)):
            if rows is not None:
                f.create_dataset(name, data=np.asarray(rows, np.float64), compression=comp)
        f.create_dataset("action", data=np.asarray(action, np.float64), compression=comp)
        if value is not None:
            f.create_dataset("value", data=np.asarray(value, np.float32))
        if timestamps_ns is not None:
            f.create_dataset("timestamps_ns", data=np.asarray(timestamps_ns, np.int64))

    def image_dataset(self, camera: str, num_steps: int, frame_shape: tuple[int, ...]) -> h5py.Dataset:
        """An empty uint8 ``[num_steps, H, W, 3]`` dataset, chunked per frame."""
        return self.file["observations/images"].create_dataset(
            camera, shape=(num_steps, *frame_shape), dtype=np.uint8, chunks=(1, *frame_shape),
            compression=self.compression,
        )


def write_episode(
    path: str | os.PathLike[str],
    *,
    qpos: np.ndarray,
    action: np.ndarray,
    images: Mapping[str, np.ndarray] | None = None,
    attrs: Mapping[str, Any] | None = None,
    compression: str | None = None,
    **arrays: np.ndarray | None,
) -> Path:
    """One whole episode at once (``arrays``: qvel, effort, value, timestamps_ns)."""
    with EpisodeWriter(path, compression) as writer:
        writer.write_attrs(attrs or {})
        writer.write_arrays(qpos=qpos, action=action, **arrays)
        for camera, frames in (images or {}).items():
            frames = np.asarray(frames, np.uint8)
            writer.image_dataset(camera, len(frames), frames.shape[1:])[...] = frames
    return Path(path)
