"""Normalization of proprio, actions and value: the one place that maps robot units
to the model's [-1, 1] range and back, next to the statistics it uses.

The statistics file is the official ``<suite>_dataset_statistics.json`` format: a JSON
object of lists, of which ``actions_min``, ``actions_max``, ``proprio_min``,
``proprio_max`` (each ``[dof]``) are used; other fields are kept and written back.
Values are predicted in [-1, 1] and reported in [0, 1].
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REQUIRED_FIELDS = ("actions_min", "actions_max", "proprio_min", "proprio_max")


@dataclass(frozen=True)
class NormalizationStats:
    """Per-dimension min/max of actions and proprio (robot units: rad, normalized gripper)."""

    actions_min: np.ndarray
    actions_max: np.ndarray
    proprio_min: np.ndarray
    proprio_max: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def action_dim(self) -> int:
        return int(self.actions_min.shape[0])

    @property
    def proprio_dim(self) -> int:
        return int(self.proprio_min.shape[0])

    # --------------------------------------------------------------- vectors
    @staticmethod
    def _to_unit(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        span = hi - lo
        # A constant dimension carries no information; map it to 0 instead of inf/nan.
        safe = np.where(span > 0, span, 1.0)
        return np.where(span > 0, 2.0 * (x - lo) / safe - 1.0, 0.0)

    @staticmethod
    def _from_unit(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return 0.5 * (x + 1.0) * (hi - lo) + lo

    def normalize_proprio(self, joint_positions: np.ndarray) -> np.ndarray:
        """Robot units ``[..., dof]`` -> [-1, 1]."""
        return self._to_unit(np.asarray(joint_positions, np.float64), self.proprio_min, self.proprio_max)

    def unnormalize_proprio(self, normalized: np.ndarray) -> np.ndarray:
        return self._from_unit(np.asarray(normalized, np.float64), self.proprio_min, self.proprio_max)

    def normalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """Robot units ``[..., horizon, dof]`` -> [-1, 1]."""
        return self._to_unit(np.asarray(actions, np.float64), self.actions_min, self.actions_max)

    def unnormalize_actions(self, normalized: np.ndarray) -> np.ndarray:
        return self._from_unit(np.asarray(normalized, np.float64), self.actions_min, self.actions_max)

    @staticmethod
    def normalize_value(value_0_1: np.ndarray) -> np.ndarray:
        return 2.0 * np.asarray(value_0_1, np.float64) - 1.0

    @staticmethod
    def unnormalize_value(normalized: np.ndarray) -> np.ndarray:
        """Model output in [-1, 1] -> value in [0, 1] (clipped, as the official code does)."""
        return np.clip((np.asarray(normalized, np.float64) + 1.0) / 2.0, 0.0, 1.0)

    # --------------------------------------------------------------- files
    def to_json_dict(self) -> dict[str, Any]:
        data = dict(self.extra)
        for name in REQUIRED_FIELDS:
            data[name] = getattr(self, name).tolist()
        return data

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json_dict(), indent=2))

    @classmethod
    def from_dict(cls, data: Any, source: str = "statistics") -> "NormalizationStats":
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object with fields {REQUIRED_FIELDS}, got {type(data).__name__}")
        arrays: dict[str, np.ndarray] = {}
        for name in REQUIRED_FIELDS:
            if name not in data:
                raise ValueError(f"{source}: field {name!r} missing (expected a list of numbers, one per dimension)")
            try:
                arr = np.asarray(data[name], dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{source}: field {name!r} must be a list of numbers ({err})") from err
            if arr.ndim != 1 or arr.size == 0:
                raise ValueError(f"{source}: field {name!r} must be a flat non-empty list, got shape {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{source}: field {name!r} contains non-finite values")
            arrays[name] = arr
        for prefix in ("actions", "proprio"):
            lo, hi = arrays[f"{prefix}_min"], arrays[f"{prefix}_max"]
            if lo.shape != hi.shape:
                raise ValueError(
                    f"{source}: fields '{prefix}_min' and '{prefix}_max' differ in length ({lo.size} vs {hi.size})"
                )
            bad = np.nonzero(lo > hi)[0]
            if bad.size:
                raise ValueError(f"{source}: '{prefix}_min' > '{prefix}_max' at dimensions {bad.tolist()}")
        extra = {k: v for k, v in data.items() if k not in REQUIRED_FIELDS}
        return cls(extra=extra, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "NormalizationStats":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: dataset statistics file not found")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        return cls.from_dict(data, source=str(path))
