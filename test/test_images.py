import numpy as np
import pytest

from cosmos_policy_ros.control.images import (ImageConversionError, compressed_to_rgb, image_to_rgb, rgb_to_image_fields,
                                      rgb_to_jpeg)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 255, (6, 5, 3), dtype=np.uint8)


def test_rgb8_with_row_padding():
    step = 5 * 3 + 7
    padded = np.zeros((6, step), np.uint8)
    padded[:, :15] = RGB.reshape(6, 15)
    np.testing.assert_array_equal(image_to_rgb("rgb8", 6, 5, step, padded.tobytes()), RGB)


def test_bgr8_and_bgra8_swap_channels():
    np.testing.assert_array_equal(image_to_rgb("bgr8", 6, 5, 15, RGB[:, :, ::-1].tobytes()), RGB)
    bgra = np.concatenate([RGB[:, :, ::-1], np.full((6, 5, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(image_to_rgb("bgra8", 6, 5, 20, bgra.tobytes()), RGB)


def test_mono8_and_mono16():
    mono = RGB[:, :, 0]
    np.testing.assert_array_equal(image_to_rgb("mono8", 6, 5, 5, mono.tobytes()), np.repeat(mono[:, :, None], 3, 2))
    mono16 = (mono.astype(np.uint16) << 8).astype(">u2")
    out = image_to_rgb("mono16", 6, 5, 10, mono16.tobytes(), is_bigendian=True)
    np.testing.assert_array_equal(out[:, :, 1], mono)


def test_compressed_png_and_jpeg():
    from PIL import Image
    import io

    buf = io.BytesIO()
    Image.fromarray(RGB).save(buf, format="PNG")
    np.testing.assert_array_equal(compressed_to_rgb("png", buf.getvalue()), RGB)
    smooth = np.full((16, 16, 3), 120, np.uint8)
    decoded = compressed_to_rgb("jpeg", rgb_to_jpeg(smooth))
    assert decoded.shape == (16, 16, 3) and np.abs(decoded.astype(int) - 120).max() <= 3


@pytest.mark.parametrize("args, message", [
    (("rgb8", 6, 5, 10, RGB.tobytes()), "step 10 < width"),
    (("rgb8", 6, 5, 15, RGB.tobytes()[:-1]), "expected step\\*height"),
    (("yuv422", 6, 5, 10, b"\0" * 60), "unsupported encoding 'yuv422'"),
    (("rgb8", 0, 5, 15, b""), "empty image"),
])
def test_malformed_images_raise_clear_errors(args, message):
    with pytest.raises(ImageConversionError, match=message):
        image_to_rgb(*args)


def test_garbage_compressed_image():
    with pytest.raises(ImageConversionError, match="cannot decode"):
        compressed_to_rgb("jpeg", b"not a jpeg")
    with pytest.raises(ImageConversionError, match="empty"):
        compressed_to_rgb("jpeg", b"")


def test_round_trip_fields():
    fields = rgb_to_image_fields(RGB)
    np.testing.assert_array_equal(image_to_rgb(fields["encoding"], fields["height"], fields["width"], fields["step"],
                                               fields["data"]), RGB)


def test_rclpy_and_bag_messages_decode_through_the_same_function(tmp_path):
    """Inference (rclpy message) and training (rosbags-deserialized message) share one decoder."""
    from types import SimpleNamespace

    from cosmos_policy_ros.control.images import image_message_to_rgb

    fields = rgb_to_image_fields(RGB)
    rclpy_like = SimpleNamespace(**fields)
    bag_like = SimpleNamespace(**{**fields, "data": np.frombuffer(fields["data"], np.uint8)})
    np.testing.assert_array_equal(image_message_to_rgb(rclpy_like), RGB)
    np.testing.assert_array_equal(image_message_to_rgb(bag_like), RGB)
    jpeg = SimpleNamespace(format="jpeg", data=rgb_to_jpeg(RGB))
    np.testing.assert_array_equal(image_message_to_rgb(jpeg), compressed_to_rgb("jpeg", jpeg.data))


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "bgra8", "mono8"])
def test_cv_bridge_where_installed_gives_identical_arrays(encoding):
    """cv_bridge is not used by the package; where it is installed it must agree with the
    package's decoder, so data recorded on either kind of machine means the same pixels."""
    cv_bridge = pytest.importorskip("cv_bridge", reason="cv_bridge not installed (not on PyPI for ROS 2)")
    from sensor_msgs.msg import Image

    from cosmos_policy_ros.control.images import image_message_to_rgb

    channels = {"rgb8": RGB, "bgr8": RGB[:, :, ::-1], "mono8": RGB[:, :, :1],
                "bgra8": np.concatenate([RGB[:, :, ::-1], np.full((6, 5, 1), 255, np.uint8)], 2)}[encoding]
    msg = Image(height=6, width=5, encoding=encoding, step=5 * channels.shape[2],
                data=np.ascontiguousarray(channels).tobytes())
    theirs = np.asarray(cv_bridge.CvBridge().imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    np.testing.assert_array_equal(image_message_to_rgb(msg), theirs)
