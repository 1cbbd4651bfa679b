"""Training-time image augmentation of the official Cosmos Policy ALOHA recipe.

Per training sample one set of parameters is drawn and applied to every image of the
sample (all cameras, current and future), in this order (the official
``apply_image_aug(..., stronger=True)``):

1. a random square crop of 90 % of the area (side ``round(sqrt(0.9 H W))``, position
   uniform), resized back to ``H x W`` (bilinear, antialiased);
2. a rotation by an angle uniform in [-5, 5] degrees (counter-clockwise positive, about
   the centre, nearest neighbour, zeros outside);
3. colour jitter with fixed order: brightness x U(0.7, 1.3), contrast x U(0.6, 1.4),
   saturation x U(0.5, 1.5), hue + U(-0.05, 0.05) turns.

Every step works on uint8 images and truncates back to uint8 as torchvision's tensor ops
do (torchvision itself is not a dependency; results can differ from it by a level at a
few pixels). Black placeholder frames stay black, so only camera images are augmented.
Augmented images replace the inference-time center crop: the images fed here are only
resized to the model's size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["AugmentationConfig", "AugmentationParams", "augment_frames"]


@dataclass(frozen=True)
class AugmentationParams:
    """One draw, shared by all frames of a sample."""

    crop_top: int
    crop_left: int
    crop_size: int
    angle_deg: float
    brightness: float
    contrast: float
    saturation: float
    hue: float


@dataclass(frozen=True)
class AugmentationConfig:
    """The official ranges (``stronger`` augmentation, used by the ALOHA runs)."""

    crop_area: float = 0.9
    max_rotation_deg: float = 5.0
    brightness: tuple[float, float] = (0.7, 1.3)
    contrast: tuple[float, float] = (0.6, 1.4)
    saturation: tuple[float, float] = (0.5, 1.5)
    max_hue: float = 0.05

    def draw(self, size: int, generator: torch.Generator) -> AugmentationParams:
        """Parameters for a ``size x size`` image from ``generator``."""
        crop = round(math.sqrt(self.crop_area * size * size))
        crop = min(max(crop, 1), size)
        top = int(torch.randint(0, size - crop + 1, (1,), generator=generator))
        left = int(torch.randint(0, size - crop + 1, (1,), generator=generator))
        u = torch.rand(5, generator=generator, dtype=torch.float64).tolist()

        def between(bounds: tuple[float, float], x: float) -> float:
            return bounds[0] + (bounds[1] - bounds[0]) * x

        return AugmentationParams(
            crop_top=top, crop_left=left, crop_size=crop,
            angle_deg=between((-self.max_rotation_deg, self.max_rotation_deg), u[0]),
            brightness=between(self.brightness, u[1]), contrast=between(self.contrast, u[2]),
            saturation=between(self.saturation, u[3]), hue=between((-self.max_hue, self.max_hue), u[4]),
        )


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float -> the uint8 levels torchvision keeps (clamped, truncated)."""
    return x.clamp(0.0, 255.0).floor()


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` -> ``[N, 1, H, W]`` ITU-R 601 luma, truncated to uint8 levels."""
    return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).floor()


def _rotate(x: torch.Tensor, angle_deg: float) -> torch.Tensor:
    if angle_deg == 0.0:
        return x
    a = math.radians(angle_deg)
    # Output pixel -> input pixel for a counter-clockwise turn in image axes (y down).
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=x.dtype)
    theta = theta.expand(x.shape[0], 2, 3)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    value = maxc
    saturation = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(maxc == r, ((g - b) / safe) % 6.0,
                      torch.where(maxc == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    return hue, saturation, value


def _hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    h6 = hue * 6.0
    sector = torch.floor(h6) % 6
    frac = h6 - torch.floor(h6)
    p = value * (1.0 - saturation)
    q = value * (1.0 - saturation * frac)
    t = value * (1.0 - saturation * (1.0 - frac))
    choices = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)]
    out = torch.zeros((3, *hue.shape), dtype=hue.dtype)
    for k, (r, g, b) in enumerate(choices):
        sel = sector == k
        out[0] = torch.where(sel, r, out[0])
        out[1] = torch.where(sel, g, out[1])
        out[2] = torch.where(sel, b, out[2])
    return out.permute(1, 0, 2, 3)


def augment_frames(frames: np.ndarray, params: AugmentationParams) -> np.ndarray:
    """uint8 ``[N, S, S, 3]`` -> uint8 ``[N, S, S, 3]``, the same draw for every frame."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or frames.shape[1] != frames.shape[2]:
        raise ValueError(f"augment_frames: expected uint8 [N, S, S, 3] square RGB frames, got {frames.dtype} "
                         f"{frames.shape}")
    size = frames.shape[1]
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    top, left, crop = params.crop_top, params.crop_left, params.crop_size
    x = torch.nn.functional.interpolate(
        x[:, :, top : top + crop, left : left + crop], size=(size, size), mode="bilinear", align_corners=False,
        antialias=True,
    ).round().clamp(0.0, 255.0)
    x = _rotate(x, params.angle_deg)
    x = _to_uint8(x * params.brightness)
    mean = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    x = _to_uint8(params.contrast * x + (1.0 - params.contrast) * mean)
    x = _to_uint8(params.saturation * x + (1.0 - params.saturation) * _grayscale(x))
    if params.hue != 0.0:
        hue, saturation, value = _rgb_to_hsv(x / 255.0)
        x = _to_uint8(_hsv_to_rgb((hue + params.hue) % 1.0, saturation, value) * 255.0)
    return x.to(torch.uint8).permute(0, 2, 3, 1).numpy()
