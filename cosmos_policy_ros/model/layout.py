"""The latent frame layout: which latent frame carries what, and which frames are
clean conditions in each of the three modes.

Cosmos Policy puts every modality into one latent video. Images are VAE-encoded;
vectors (proprio, action chunk, value) replace a placeholder frame: the normalized
vector is flattened and tiled over the whole ``[C, h, w]`` frame ("injection"), and it
is read back as the mean over the complete copies ("extraction").

One model serves three modes, told apart only by which frames are conditions:

- ``policy``       p(a, s', V | s)
- ``world_model``  p(s', V | s, a)
- ``value``        p(V | s, a, s')   (or V(s') when the checkpoint masks s and a)

A layout is data (saved in the checkpoint folder), so LIBERO / RoboCasa / ALOHA and
the planning checkpoint's V(s') variant differ only in their slot tables.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

MODES = ("policy", "world_model", "value")
SLOT_KINDS = ("blank", "proprio", "image", "action", "value")

SlotKind = Literal["blank", "proprio", "image", "action", "value"]


@dataclass(frozen=True)
class LatentSlot:
    """One latent frame.

    name: unique slot name, e.g. ``"cam_high"`` or ``"future_proprio"``.
    kind: what the frame holds (blank | proprio | image | action | value).
    camera: for image slots, the camera whose image fills the frame's raw placeholder
        (future image slots are seeded with the *current* image of that camera).
    future: True for slots that describe the state after the action chunk.
    """

    name: str
    kind: SlotKind
    camera: str | None = None
    future: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "camera": self.camera, "future": self.future}


@dataclass(frozen=True)
class LatentLayout:
    """Ordered slots plus, per mode, the names of the slots that are clean conditions."""

    slots: tuple[LatentSlot, ...]
    conditions: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [slot.name for slot in self.slots]
        if len(set(names)) != len(names):
            raise ValueError(f"layout: slot names must be unique, got {names}")
        if not self.slots or self.slots[0].kind != "blank":
            raise ValueError("layout: slot 0 must be the blank frame (the VAE's 1-frame latent)")
        for slot in self.slots:
            if slot.kind not in SLOT_KINDS:
                raise ValueError(f"layout: slot {slot.name!r} has kind {slot.kind!r}, expected one of {SLOT_KINDS}")
            if slot.kind == "image" and not slot.camera:
                raise ValueError(f"layout: image slot {slot.name!r} needs a camera name")
        for mode in MODES:
            if mode not in self.conditions:
                raise ValueError(f"layout: conditions for mode {mode!r} missing (expected keys {MODES})")
        for mode, cond in self.conditions.items():
            if mode not in MODES:
                raise ValueError(f"layout: unknown mode {mode!r}, expected one of {MODES}")
            unknown = sorted(set(cond) - set(names))
            if unknown:
                raise ValueError(f"layout: mode {mode!r} conditions name unknown slots {unknown}")
        for kind in ("action", "value"):
            if sum(slot.kind == kind for slot in self.slots) != 1:
                raise ValueError(f"layout: exactly one {kind!r} slot expected")

    # ---------------------------------------------------------------- queries
    @property
    def num_frames(self) -> int:
        return len(self.slots)

    @property
    def slot_names(self) -> tuple[str, ...]:
        return tuple(slot.name for slot in self.slots)

    def index(self, name: str) -> int:
        for i, slot in enumerate(self.slots):
            if slot.name == name:
                return i
        raise KeyError(f"layout has no slot {name!r}; slots are {self.slot_names}")

    def slot(self, name: str) -> LatentSlot:
        return self.slots[self.index(name)]

    def index_of_kind(self, kind: SlotKind, future: bool = False) -> int:
        """Index of the (first) slot of a kind; for proprio, ``future`` picks s or s'."""
        for i, slot in enumerate(self.slots):
            if slot.kind == kind and (kind in ("action", "value", "blank") or slot.future == future):
                return i
        raise KeyError(f"layout has no {'future ' if future else ''}{kind} slot")

    def has_kind(self, kind: SlotKind, future: bool = False) -> bool:
        try:
            self.index_of_kind(kind, future)
        except KeyError:
            return False
        return True

    def image_slots(self, future: bool) -> list[tuple[int, LatentSlot]]:
        return [(i, s) for i, s in enumerate(self.slots) if s.kind == "image" and s.future == future]

    @property
    def cameras(self) -> tuple[str, ...]:
        """Cameras the model reads, in slot order (current-state image slots)."""
        return tuple(s.camera for _, s in self.image_slots(future=False) if s.camera)

    def condition_frames(self, mode: str) -> torch.Tensor:
        """``[T]`` bool: True where the frame is a clean condition in ``mode``."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}, expected one of {MODES}")
        cond = set(self.conditions[mode])
        return torch.tensor([slot.name in cond for slot in self.slots], dtype=torch.bool)

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "slots": [slot.to_dict() for slot in self.slots],
            "conditions": {mode: list(self.conditions[mode]) for mode in MODES},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "layout") -> "LatentLayout":
        try:
            slots = tuple(
                LatentSlot(
                    name=str(s["name"]),
                    kind=s["kind"],
                    camera=s.get("camera"),
                    future=bool(s.get("future", False)),
                )
                for s in data["slots"]
            )
            conditions = {str(mode): tuple(names) for mode, names in data["conditions"].items()}
        except (KeyError, TypeError) as err:
            raise ValueError(
                f"{source}: field 'layout' malformed ({err!r}); expected "
                "{'slots': [{'name', 'kind', 'camera', 'future'}...], 'conditions': {mode: [slot names]}}"
            ) from err
        try:
            return cls(slots=slots, conditions=conditions)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from err


def _build_layout(current: list[LatentSlot], value_conditions_mask_current: bool) -> LatentLayout:
    """blank, current state, action, future state (same shape as current), value."""
    future = [
        LatentSlot(name=f"future_{s.name}", kind=s.kind, camera=s.camera, future=True) for s in current
    ]
    slots = (
        LatentSlot("blank", "blank"),
        *current,
        LatentSlot("action", "action"),
        *future,
        LatentSlot("value", "value"),
    )
    state = ["blank"] + [s.name for s in current]
    future_names = [s.name for s in future]
    if value_conditions_mask_current:
        value_cond = ["blank"] + future_names
    else:
        value_cond = state + ["action"] + future_names
    return LatentLayout(
        slots=slots,
        conditions={
            "policy": tuple(state),
            "world_model": tuple(state + ["action"]),
            "value": tuple(value_cond),
        },
    )


def aloha_layout(value_from_future_state_only: bool = False) -> LatentLayout:
    """ALOHA, 11 frames: blank, proprio, left wrist, right wrist, cam_high, action,
    future proprio, future left wrist, future right wrist, future cam_high, value.

    ``value_from_future_state_only``: the planning checkpoint's V(s') value function,
    trained with the current state and action masked out (not conditions) in value mode.
    """
    current = [
        LatentSlot("proprio", "proprio"),
        LatentSlot("left_wrist", "image", camera="cam_left_wrist"),
        LatentSlot("right_wrist", "image", camera="cam_right_wrist"),
        LatentSlot("cam_high", "image", camera="cam_high"),
    ]
    return _build_layout(current, value_from_future_state_only)


def aloha_top_camera_layout(value_from_future_state_only: bool = False) -> LatentLayout:
    """ALOHA with the top camera only, 7 frames: blank, proprio, cam_high, action, future
    proprio, future cam_high, value (the embedded sim checkpoints; ACT's sim transfer-cube
    policy also sees the top camera only)."""
    current = [LatentSlot("proprio", "proprio"), LatentSlot("cam_high", "image", camera="cam_high")]
    return _build_layout(current, value_from_future_state_only)


def libero_layout() -> LatentLayout:
    """LIBERO, 9 frames: blank, proprio, wrist, primary, action, future x3, value."""
    current = [
        LatentSlot("proprio", "proprio"),
        LatentSlot("wrist", "image", camera="wrist"),
        LatentSlot("primary", "image", camera="primary"),
    ]
    return _build_layout(current, False)


def robocasa_layout() -> LatentLayout:
    """RoboCasa, 11 frames: blank, proprio, wrist, primary, secondary, action, future x4, value."""
    current = [
        LatentSlot("proprio", "proprio"),
        LatentSlot("wrist", "image", camera="wrist"),
        LatentSlot("primary", "image", camera="primary"),
        LatentSlot("secondary", "image", camera="secondary"),
    ]
    return _build_layout(current, False)


# ------------------------------------------------------------------ injection / extraction
def tile_vector(vector: torch.Tensor, frame_shape: tuple[int, int, int]) -> torch.Tensor:
    """``[B, n]`` -> ``[B, C, h, w]``: the vector repeated in C-major flat order to fill
    the frame; the last copy is truncated when ``C*h*w`` is not a multiple of ``n``."""
    batch, n = vector.shape
    numel = frame_shape[0] * frame_shape[1] * frame_shape[2]
    if n == 0 or n > numel:
        raise ValueError(f"cannot tile a {n}-element vector into a latent frame of {numel} elements")
    copies = -(-numel // n)
    return vector.repeat(1, copies)[:, :numel].reshape(batch, *frame_shape)


def mean_over_copies(frame: torch.Tensor, n: int) -> torch.Tensor:
    """``[B, C, h, w]`` -> ``[B, n]``: mean over the complete copies of an ``n``-vector."""
    batch = frame.shape[0]
    flat = frame.reshape(batch, -1)
    copies = flat.shape[1] // n
    if copies < 1:
        raise ValueError(f"a latent frame of {flat.shape[1]} elements holds no complete {n}-vector")
    return flat[:, : copies * n].reshape(batch, copies, n).mean(dim=1)


def inject(latents: torch.Tensor, frame_index: int, vector: torch.Tensor) -> torch.Tensor:
    """Return a copy of ``latents [B, C, T, h, w]`` with frame ``frame_index`` replaced by
    the tiled ``vector [B, n]`` (or ``[n]``, broadcast over the batch)."""
    if vector.ndim == 1:
        vector = vector.unsqueeze(0).expand(latents.shape[0], -1)
    out = latents.clone()
    out[:, :, frame_index] = tile_vector(vector.to(latents.dtype), (latents.shape[1], *latents.shape[3:]))
    return out


def extract(latents: torch.Tensor, frame_index: int, n: int) -> torch.Tensor:
    """``[B, C, T, h, w]`` -> ``[B, n]``: the vector injected in frame ``frame_index``."""
    return mean_over_copies(latents[:, :, frame_index], n)
