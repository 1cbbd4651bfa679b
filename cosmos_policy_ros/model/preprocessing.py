"""Test-time image preprocessing, as the official Cosmos Policy evaluation does it:
optional crop to the camera's region of interest (``crop_box``; not in the official
pipeline, used where the task's objects are a few pixels of the whole frame), optional
resize to the size the training data was stored at (official ALOHA: 256x256 bicubic, done
by its robot client) and then to the model's square size, optional JPEG
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


def validate_crop_box(box) -> tuple[float, float, float, float]:
    """``(top, left, height, width)`` as fractions of the frame; raises ValueError otherwise."""
    try:
        values = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"crop box {box!r}: expected four numbers (top, left, height, width), "
                         "fractions of the frame") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"crop box {box!r}: expected four finite numbers (top, left, height, width)")
    top, left, height, width = values
    if not (0 <= top < 1 and 0 <= left < 1 and height > 0 and width > 0
            and top + height <= 1 + 1e-9 and left + width <= 1 + 1e-9):
        raise ValueError(f"crop box {box!r}: (top, left, height, width) must lie inside the frame, "
                         "as fractions in [0, 1] with a positive height and width")
    return values


def crop_region(image: np.ndarray, box) -> np.ndarray:
    """The part of ``image`` inside ``box`` = ``(top, left, height, width)``, fractions of
    its height and width (so one box serves a 240x320 sim frame and a 480x640 camera)."""
    top, left, height, width = validate_crop_box(box)
    rows, cols = image.shape[:2]
    y0, x0 = int(round(top * rows)), int(round(left * cols))
    y1 = min(rows, max(y0 + 1, int(round((top + height) * rows))))
    x1 = min(cols, max(x0 + 1, int(round((left + width) * cols))))
    return np.ascontiguousarray(image[y0:y1, x0:x1])


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
    stored_image_size: int | None = None, crop_box=None,
) -> np.ndarray:
    """uint8 ``[H, W, 3]`` camera image -> uint8 ``[size, size, 3]`` model input.

    ``crop_box``: ``(top, left, height, width)`` fractions of the frame the model sees; with
    ``stored_image_size`` it is cut from the stored square frame, as training did.

    ``stored_image_size``: the square size the training frames were stored at; the frame
    is resized to it first, then to ``size`` (two bicubic stages, not one), before JPEG.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")
    if stored_image_size is not None:
        image = resize_square(image, stored_image_size)
        if crop_box is not None:
            image = crop_region(image, crop_box)
        image = resize_square(image, size)
    elif crop_box is not None:
        image = crop_region(image, crop_box)
    if jpeg_quality is not None:
        image = jpeg_round_trip(image, jpeg_quality)
    image = resize_square(image, size)
    if center_crop_area is not None and center_crop_area < 1.0:
        image = center_crop_resize(image, center_crop_area)
    return image
