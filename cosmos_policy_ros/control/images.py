"""sensor_msgs image payloads -> uint8 RGB numpy arrays, without cv_bridge.

Functions take the message fields, not ROS objects, so they are tested without ROS. Every
malformed input raises `ImageConversionError` with the reason; callers count it and keep
running. This is the only decoder, for inference and training alike; cv_bridge is not used
(a test checks it gives identical arrays where it is installed). These cover what ALOHA
cameras publish.
"""
from __future__ import annotations

import io

import numpy as np

# encoding -> (channels, dtype, channel slice giving RGB). Basic slices, not fancy
# indexing: one strided copy instead of a gather (6x faster on a 480x640 frame).
_RGB = slice(0, 3)
_BGR = slice(2, None, -1)
_ENCODINGS = {
    "rgb8": (3, np.uint8, _RGB),
    "bgr8": (3, np.uint8, _BGR),
    "rgba8": (4, np.uint8, _RGB),
    "bgra8": (4, np.uint8, _BGR),
    "mono8": (1, np.uint8, None),
    "8UC1": (1, np.uint8, None),
    "8UC3": (3, np.uint8, _BGR),  # OpenCV default order
    "mono16": (1, np.uint16, None),
}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)


class ImageConversionError(ValueError):
    """An image message that cannot be turned into RGB; the message says why."""


def check_image(encoding: str, height: int, width: int, step: int, num_bytes: int) -> None:
    """The O(1) checks of a `sensor_msgs/Image` header against its payload size; raises
    ImageConversionError with the reason. Cheap enough for every message of every camera,
    so bad frames are reported on arrival while pixels are only converted when used."""
    if encoding not in _ENCODINGS:
        raise ImageConversionError(f"unsupported encoding {encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"empty image {height}x{width}")
    channels, dtype, _ = _ENCODINGS[encoding]
    row_bytes = width * channels * np.dtype(dtype).itemsize
    if step < row_bytes:
        raise ImageConversionError(f"step {step} < width*channels*bytes {row_bytes} for {encoding}")
    if num_bytes != step * height:
        raise ImageConversionError(f"data has {num_bytes} bytes, expected step*height = {step}*{height} = {step * height}")


def image_to_rgb(encoding: str, height: int, width: int, step: int, data, is_bigendian: bool = False) -> np.ndarray:
    """Decode a `sensor_msgs/Image` payload to uint8 RGB `[height, width, 3]`.

    Unpadded rgb8 comes back as a read-only view of `data` (no copy); other encodings
    are converted into a new array.
    """
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).ravel()
    check_image(encoding, height, width, step, buffer.size)
    channels, dtype, order = _ENCODINGS[encoding]
    itemsize = np.dtype(dtype).itemsize
    row_bytes = width * channels * itemsize
    rows = buffer.reshape(height, step)[:, :row_bytes]
    if itemsize == 1:
        pixels = rows.reshape(height, width, channels)
    else:
        typed = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(">" if is_bigendian else "<"))
        pixels = (typed.reshape(height, width, channels) >> 8).astype(np.uint8)
    if channels == 1:
        return np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, order])


def compressed_to_rgb(format_: str, data) -> np.ndarray:
    """Decode a `sensor_msgs/CompressedImage` (jpeg/png) to uint8 RGB `[H, W, 3]`."""
    from PIL import Image, UnidentifiedImageError

    raw = bytes(data)
    if not raw:
        raise ImageConversionError(f"empty compressed image (format {format_!r})")
    try:
        with Image.open(io.BytesIO(raw)) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageConversionError(f"cannot decode compressed image (format {format_!r}): {exc}") from exc


def image_message_to_rgb(msg) -> np.ndarray:
    """A sensor_msgs/Image or CompressedImage (rclpy or rosbags message) -> uint8 RGB.

    The one decode path of the package: the policy node, the planner and the bag-to-dataset
    conversion all call it, so a model sees at run time the pixels it was trained on.
    ImageConversionError on bad input.
    """
    if hasattr(msg, "encoding"):
        return image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian))
    return compressed_to_rgb(msg.format, msg.data)


def rgb_to_image_fields(rgb: np.ndarray) -> dict:
    """Fields of an rgb8 `sensor_msgs/Image` for a uint8 `[H, W, 3]` array."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageConversionError(f"expected [H, W, 3] uint8, got shape {rgb.shape}")
    h, w, _ = rgb.shape
    return {"encoding": "rgb8", "height": h, "width": w, "step": w * 3, "is_bigendian": 0, "data": rgb.tobytes()}


def rgb_to_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(out, format="JPEG", quality=quality)
    return out.getvalue()
