"""Recorder throughput on this machine: `python bench/bench_recorder.py` (< 60 s).

Two runs of EpisodeRecorder with pre-serialized CDR messages (the hot path takes bytes as
they come off the wire, so serialization is not part of what is measured):

1. sustained: the ALOHA load in real time, 3 cameras 480x640 rgb8 at 30 Hz plus the two
   arms' JointState at 50 Hz each, for `--seconds` (default 10 s);
2. flat-out: the same mix written as fast as one producer thread can, for
   `--flat-out-seconds` (default 4 s), to find the writer's ceiling (drops expected).

Reported: messages/s and MB/s written (MB = 10^6 bytes of message payload), drops, the
time write() takes in the producer (what a ROS callback waits), the deepest the queue got,
and how long stop_episode() took to drain and close the bag. The bags are deleted.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cosmos_policy_ros.recording import EpisodeRecorder, build_typestore  # noqa: E402

CAMERAS = ('cam_high', 'cam_left_wrist', 'cam_right_wrist')
ARMS = ('left', 'right')
HEIGHT, WIDTH = 480, 640


def _messages(typestore):
    """Pre-serialized CDR: one image per camera (random pixels), one JointState per arm."""
    t = typestore.types
    rng = np.random.default_rng(0)

    def header(frame):
        return t['std_msgs/msg/Header'](stamp=t['builtin_interfaces/msg/Time'](sec=0, nanosec=0), frame_id=frame)

    images = {
        cam: typestore.serialize_cdr(
            t['sensor_msgs/msg/Image'](
                header=header(cam), height=HEIGHT, width=WIDTH, encoding='rgb8', is_bigendian=0,
                step=WIDTH * 3, data=rng.integers(0, 256, HEIGHT * WIDTH * 3, dtype=np.uint8)),
            'sensor_msgs/msg/Image')
        for cam in CAMERAS
    }
    names = ['waist', 'shoulder', 'elbow', 'forearm_roll', 'wrist_angle', 'wrist_rotate', 'left_finger', 'right_finger']
    joints = {
        arm: typestore.serialize_cdr(
            t['sensor_msgs/msg/JointState'](
                header=header(''), name=names, position=rng.normal(size=8), velocity=rng.normal(size=8),
                effort=rng.normal(size=8)),
            'sensor_msgs/msg/JointState')
        for arm in ARMS
    }
    return images, joints


def _schedule(seconds: float) -> list[tuple[float, str, str]]:
    """(time s, kind, name) for the ALOHA load, sorted by time."""
    events = []
    for cam in CAMERAS:
        events += [(k / 30.0, 'image', cam) for k in range(int(seconds * 30))]
    for arm in ARMS:
        events += [(k / 50.0, 'joint', arm) for k in range(int(seconds * 50))]
    return sorted(events)


def _run(recorder, images, joints, seconds: float, real_time: bool) -> dict:
    topics = {('image', c): (f'{c}/image_raw', 'sensor_msgs/msg/Image', images[c]) for c in CAMERAS}
    topics.update({('joint', a): (f'follower_{a}/joint_states', 'sensor_msgs/msg/JointState', joints[a]) for a in ARMS})
    schedule = _schedule(seconds if real_time else 1.0)
    before = recorder.stats()
    latencies = []
    recorder.start_episode(f'bench_{"sustained" if real_time else "flat_out"}')
    start = time.perf_counter()
    offered = 0
    offered_bytes = 0
    while True:
        for at, kind, name in schedule:
            if real_time:
                delay = start + at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            topic, msgtype, data = topics[(kind, name)]
            t0 = time.perf_counter()
            accepted = recorder.write(topic, msgtype, data, time.time_ns())
            latencies.append(time.perf_counter() - t0)
            offered += 1
            offered_bytes += len(data)
            if not accepted and not real_time:
                time.sleep(0.001)  # queue full: give the writer the CPU instead of spinning
        if real_time or time.perf_counter() - start >= seconds:
            break  # flat-out repeats the 1 s mix until `seconds` have passed
    feed_s = time.perf_counter() - start
    t_stop = time.perf_counter()
    recorder.stop_episode()
    stop_s = time.perf_counter() - t_stop
    total_s = time.perf_counter() - start
    after = recorder.stats()
    written = after.written - before.written
    written_bytes = after.bytes_written - before.bytes_written
    lat = np.asarray(latencies) * 1e6
    return {
        'offered_msgs': offered,
        'offered_MB_per_s': offered_bytes / feed_s / 1e6,
        'written_msgs': written,
        'written_msgs_per_s': written / total_s,
        'written_MB_per_s': written_bytes / total_s / 1e6,
        'dropped': after.dropped - before.dropped,
        'dropped_percent': 100.0 * (after.dropped - before.dropped) / max(offered, 1),
        'dropped_by_topic': {k: v - before.dropped_by_topic.get(k, 0) for k, v in after.dropped_by_topic.items()
                             if v - before.dropped_by_topic.get(k, 0)},
        'write_call_us_p50': float(np.percentile(lat, 50)),
        'write_call_us_p99': float(np.percentile(lat, 99)),
        'write_call_us_max': float(lat.max()),
        'max_queue_MB': after.max_queue_bytes / 1e6,
        'stop_drain_s': stop_s,
        'seconds': total_s,
    }


def run(seconds: float = 10.0, flat_out_seconds: float = 4.0, directory: str | None = None) -> dict:
    typestore = build_typestore()
    images, joints = _messages(typestore)
    root = Path(tempfile.mkdtemp(prefix='bench_recorder_', dir=directory))
    try:
        results = {}
        with EpisodeRecorder(root, typestore=typestore) as recorder:
            results['sustained'] = _run(recorder, images, joints, seconds, real_time=True)
        # A fresh recorder so the sustained run's max queue depth does not carry over.
        with EpisodeRecorder(root, typestore=typestore) as recorder:
            results['flat_out'] = _run(recorder, images, joints, flat_out_seconds, real_time=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results['load'] = {
        'cameras': f'{len(CAMERAS)} x {HEIGHT}x{WIDTH} rgb8 @ 30 Hz',
        'joints': f'{len(ARMS)} x JointState @ 50 Hz',
        'target_msgs_per_s': len(CAMERAS) * 30 + len(ARMS) * 50,
        'target_MB_per_s': (len(CAMERAS) * 30 * len(images[CAMERAS[0]]) + len(ARMS) * 50 * len(joints['left'])) / 1e6,
        'directory': str(root.parent),
    }
    return results


def _print(results: dict) -> None:
    load = results['load']
    print(f"load: {load['cameras']} + {load['joints']} = {load['target_msgs_per_s']} msg/s, "
          f"{load['target_MB_per_s']:.1f} MB/s; bags under {load['directory']}")
    rows = [
        ('written msg/s', 'written_msgs_per_s', '{:.0f}'),
        ('written MB/s', 'written_MB_per_s', '{:.1f}'),
        ('offered MB/s', 'offered_MB_per_s', '{:.1f}'),
        ('messages offered', 'offered_msgs', '{}'),
        ('messages written', 'written_msgs', '{}'),
        ('dropped', 'dropped', '{}'),
        ('dropped [%]', 'dropped_percent', '{:.1f}'),
        ('write() p50 [us]', 'write_call_us_p50', '{:.1f}'),
        ('write() p99 [us]', 'write_call_us_p99', '{:.1f}'),
        ('write() max [us]', 'write_call_us_max', '{:.0f}'),
        ('max queue [MB]', 'max_queue_MB', '{:.1f}'),
        ('stop (drain+close) [s]', 'stop_drain_s', '{:.3f}'),
        ('run time [s]', 'seconds', '{:.1f}'),
    ]
    print(f"{'':24}{'sustained':>14}{'flat-out':>14}")
    for label, key, fmt in rows:
        print(f'{label:24}' + ''.join(f'{fmt.format(results[r][key]):>14}' for r in ('sustained', 'flat_out')))
    ceiling = results['flat_out']['written_MB_per_s']
    per_camera = HEIGHT * WIDTH * 3 * 30 / 1e6
    print(f'ceiling: {ceiling:.0f} MB/s written ~ {ceiling / per_camera:.1f} cameras of 480x640 rgb8 at 30 Hz; '
          f"sustained ALOHA load dropped {results['sustained']['dropped']} messages")


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=10.0, help='sustained run length')
    parser.add_argument('--flat-out-seconds', type=float, default=4.0)
    parser.add_argument('--dir', default=None, help='where to write the bags (default: the system temp dir)')
    cli = parser.parse_args()
    _print(run(cli.seconds, cli.flat_out_seconds, cli.dir))
