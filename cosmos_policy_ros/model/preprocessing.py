"""Test-time image preprocessing, as the official Cosmos Policy evaluation does it:
optional resize to the size the training data was stored at (official ALOHA: 256x256
bicubic, done by its robot client) and then to the model's square size, optional JPEG
round trip, resize to the model's square size (a no-op after the first stage), then a
90%-area center crop resized back (matching the 90%-area random crops seen in training).

Input and output are uint8 RGB ``[H, W, 3]``. The crop's resize is bilinear with
antialiasing (torchvision's tensor resize); it is done with torch directly, so pixel
values can differ from torchvision's by at most one level.
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """PIL bicubic resize (what the official pipeline's ``Image.resize`` does)."""
    if image.shape[:2] == (size, size):
        return image.copy()
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))


def center_crop_resize(image: np.ndarray, area_fraction: float) -> np.ndarray:
    """Crop the centered square of ``area_fraction`` of the area, resize back (antialiased)."""
    height, width = image.shape[:2]
    crop = int(height * math.sqrt(area_fraction))
    top = int(round((height - crop) / 2.0))
    left = int(round((width - crop) / 2.0))
    patch = torch.from_numpy(np.ascontiguousarray(image[top : top + crop, left : left + crop]))
    patch = patch.permute(2, 0, 1)[None].float()
    resized = torch.nn.functional.interpolate(
        patch, size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )
    return resized.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()


def preprocess_image(
    image: np.ndarray, size: int, center_crop_area: float | None = 0.9, jpeg_quality: int | None = None,
    stored_image_size: int | None = None,
) -> np.ndarray:
    """uint8 ``[H, W, 3]`` camera image -> uint8 ``[size, size, 3]`` model input.

    ``stored_image_size``: the square size the training frames were stored at; the frame
    is resized to it first, then to ``size`` (two bicubic stages, not one), before JPEG.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")
    if stored_image_size is not None:
        image = resize_square(resize_square(image, stored_image_size), size)
    if jpeg_quality is not None:
        image = jpeg_round_trip(image, jpeg_quality)
    image = resize_square(image, size)
    if center_crop_area is not None and center_crop_area < 1.0:
        image = center_crop_resize(image, center_crop_area)
    return image
