"""EpisodeRecorder: exact round trip, drops, labels, and kill safety across processes."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader

from cosmos_policy_ros.recording import (
    EPISODE_EVENT_TYPE,
    EpisodeOutcome,
    EpisodeRecorder,
    RecorderError,
    build_typestore,
    is_bag_closed,
    label_episode,
    read_bag_events,
    read_episode_info,
    read_outcome,
    recover,
)

REPO = Path(__file__).resolve().parent.parent
MSG_DIR = REPO / 'msg'


@pytest.fixture(scope='module')
def typestore():
    return build_typestore(MSG_DIR)


def _stamp(ts, ns):
    return ts.types['builtin_interfaces/msg/Time'](sec=ns // 10**9, nanosec=ns % 10**9)


def _header(ts, ns, frame=''):
    return ts.types['std_msgs/msg/Header'](stamp=_stamp(ts, ns), frame_id=frame)


def _sample_messages(ts):
    """One message of every type the robot graph records, with non-trivial contents."""
    t = ts.types
    rng = np.random.default_rng(0)
    ns = 1_700_000_000_123_456_789
    image = t['sensor_msgs/msg/Image'](
        header=_header(ts, ns, 'cam_high'), height=48, width=64, encoding='rgb8', is_bigendian=0,
        step=64 * 3, data=rng.integers(0, 255, 48 * 64 * 3, dtype=np.uint8),
    )
    chunk = t['cosmos_policy_ros/msg/ActionChunk'](
        header=_header(ts, ns), chunk_id=7, joint_names=[f'j{i}' for i in range(14)], horizon=3, dof=14,
        control_period=t['builtin_interfaces/msg/Duration'](sec=0, nanosec=20_000_000),
        positions=rng.normal(size=42), predicted_value=0.25,
    )
    duration = t['builtin_interfaces/msg/Duration'](sec=0, nanosec=5_000_000)
    return [
        ('cam_high/image_raw', 'sensor_msgs/msg/Image', image),
        ('cam_left_wrist/image_raw/compressed', 'sensor_msgs/msg/CompressedImage',
         t['sensor_msgs/msg/CompressedImage'](header=_header(ts, ns), format='jpeg',
                                              data=np.frombuffer(b'\xff\xd8fakejpeg\xff\xd9', np.uint8))),
        ('follower_left/joint_states', 'sensor_msgs/msg/JointState',
         t['sensor_msgs/msg/JointState'](header=_header(ts, ns), name=['waist', 'shoulder'],
                                         position=np.array([0.1, -0.2]), velocity=np.array([1.0, 2.0]),
                                         effort=np.array([], dtype=np.float64))),
        ('executed_command', 'std_msgs/msg/Float64MultiArray',
         t['std_msgs/msg/Float64MultiArray'](
             layout=t['std_msgs/msg/MultiArrayLayout'](dim=[], data_offset=0), data=rng.normal(size=14))),
        ('follower_left/commands', 'trajectory_msgs/msg/JointTrajectory',
         t['trajectory_msgs/msg/JointTrajectory'](
             header=_header(ts, ns), joint_names=['waist'],
             points=[t['trajectory_msgs/msg/JointTrajectoryPoint'](
                 positions=np.array([0.5]), velocities=np.array([], dtype=np.float64),
                 accelerations=np.array([], dtype=np.float64), effort=np.array([], dtype=np.float64),
                 time_from_start=duration)])),
        ('/clock', 'rosgraph_msgs/msg/Clock', t['rosgraph_msgs/msg/Clock'](clock=_stamp(ts, ns))),
        ('action_chunk', 'cosmos_policy_ros/msg/ActionChunk', chunk),
        ('plan_request', 'cosmos_policy_ros/msg/PlanRequest',
         t['cosmos_policy_ros/msg/PlanRequest'](
             header=_header(ts, ns), request_id=3, task='fold the shirt', camera_names=['cam_high'],
             images=[image], joint_positions=rng.normal(size=14), candidates=[chunk, chunk], action_latents=rng.normal(size=2 * 16 * 2 * 2).astype(np.float32),
             action_latents_shape=np.array([2, 16, 2, 2], np.uint32),
             deadline=duration)),
        ('plan_result', 'cosmos_policy_ros/msg/PlanResult',
         t['cosmos_policy_ros/msg/PlanResult'](
             header=_header(ts, ns), request_id=3, candidate_values=np.array([0.1, 0.9], np.float32),
             chosen_index=1, predicted_joint_positions=rng.normal(size=14), compute_time=0.5, ok=True,
             message='')),
    ]


def test_round_trip_is_exact(tmp_path, typestore):
    samples = _sample_messages(typestore)
    with EpisodeRecorder(tmp_path, typestore=typestore) as recorder:
        bag = recorder.start_episode('ep_0001', {'task': 'fold the shirt', 'policy': 'cosmos'})
        assert recorder.recording and recorder.bag_dir == bag
        sent = []
        for k in range(3):
            for i, (topic, msgtype, msg) in enumerate(samples):
                data = typestore.serialize_cdr(msg, msgtype)
                stamp = 1_000_000_000 + 1_000_000 * (10 * k + i)
                assert recorder.write(topic, msgtype, data, stamp)
                sent.append((topic, msgtype, stamp, bytes(data)))
        assert recorder.stop_episode(EpisodeOutcome(True, 0.5, 'clean')) == bag
        assert not recorder.recording
        stats = recorder.stats()
    assert stats.accepted == stats.written == len(sent) and stats.dropped == 0

    assert is_bag_closed(bag)
    with Reader(bag) as reader:
        got = [(c.topic, c.msgtype, t, bytes(d)) for c, t, d in reader.messages()
               if c.msgtype != EPISODE_EVENT_TYPE]
        by_topic = {c.topic: c for c in reader.connections}
        assert by_topic['cam_high/image_raw'].digest == typestore.hash_rihs01('sensor_msgs/msg/Image')
    assert got == sent  # bytes, topics, types and stamps, in order
    meta = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert meta['storage_identifier'] == 'mcap' and meta['relative_file_paths'] == ['ep_0001.mcap']
    assert meta['custom_data']['episode_id'] == 'ep_0001'
    for (topic, msgtype, msg), (_, _, _, data) in zip(samples, got):
        back = typestore.deserialize_cdr(data, msgtype)
        assert typestore.serialize_cdr(back, msgtype) == typestore.serialize_cdr(msg, msgtype)

    events = read_bag_events(bag, typestore)
    assert [e['event'] for e in events] == ['START', 'STOP']
    assert events[1]['outcome'].success and math.isclose(events[1]['outcome'].score, 0.5)
    assert read_outcome(bag) == EpisodeOutcome(True, 0.5, 'clean')
    info = read_episode_info(bag)
    assert info['episode_id'] == 'ep_0001' and info['metadata']['task'] == 'fold the shirt'


def test_label_and_relabel(tmp_path, typestore):
    with EpisodeRecorder(tmp_path, typestore=typestore) as recorder:
        bag = recorder.start_episode('ep')
        recorder.stop_episode()
    assert read_outcome(bag) is None
    assert label_episode(bag, True, 0.8) == EpisodeOutcome(True, 0.8)
    assert label_episode(bag, False, note='dropped the cloth') == EpisodeOutcome(False, None, 'dropped the cloth')
    assert read_outcome(bag) == EpisodeOutcome(False, None, 'dropped the cloth')
    text = (bag / 'outcome.yaml').read_text()
    assert 'history' in text and '0.8' in text  # the corrected label is kept
    assert not list(bag.glob('.outcome*'))  # no temp files left from the atomic write
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        label_episode(bag, True, 1.5)
    with pytest.raises(RecorderError, match='not an episode bag'):
        label_episode(tmp_path, True)


def test_state_errors_and_writes_outside_episode(tmp_path, typestore):
    with EpisodeRecorder(tmp_path, typestore=typestore) as recorder:
        assert not recorder.write('x', 'std_msgs/msg/Float64MultiArray', b'\0' * 8, 1)
        with pytest.raises(ValueError, match='unknown message type'):
            recorder.write('x', 'nope_msgs/msg/Nope', b'', 1)
        with pytest.raises(RecorderError, match='must match'):
            recorder.start_episode('../evil')
        recorder.start_episode('a')
        with pytest.raises(RecorderError, match='still recording'):
            recorder.start_episode('b')
        recorder.stop_episode()
        with pytest.raises(RecorderError, match='exists already'):
            recorder.start_episode('a')
        assert recorder.stop_episode() is None
        assert recorder.stats().not_recording == 1


def test_full_queue_drops_are_counted_and_accepted_data_kept(tmp_path, typestore):
    recorder = EpisodeRecorder(tmp_path, typestore=typestore, max_queue_messages=10)
    gate = threading.Event()
    real_write_raw = recorder._write_raw

    def slow_disk(episode, topic, msgtype, data, stamp_ns):
        if topic == 'cam':
            gate.wait(10)
        return real_write_raw(episode, topic, msgtype, data, stamp_ns)

    recorder._write_raw = slow_disk
    bag = recorder.start_episode('slow')
    msg = typestore.types['std_msgs/msg/Float64MultiArray'](
        layout=typestore.types['std_msgs/msg/MultiArrayLayout'](dim=[], data_offset=0), data=np.zeros(3))
    data = typestore.serialize_cdr(msg, 'std_msgs/msg/Float64MultiArray')
    accepted = [recorder.write('cam', 'std_msgs/msg/Float64MultiArray', data, i) for i in range(50)]
    assert 10 <= sum(accepted) <= 11 and not all(accepted)
    stats = recorder.stats()
    assert stats.dropped == 50 - sum(accepted) and stats.dropped_by_topic == {'cam': stats.dropped}
    gate.set()
    recorder.stop_episode()
    recorder.close()
    with Reader(bag) as reader:
        assert sum(c.msgcount for c in reader.connections if c.topic == 'cam') == sum(accepted)


CHILD = textwrap.dedent('''
    import sys, time
    import numpy as np
    from cosmos_policy_ros.recording import EpisodeRecorder, build_typestore, install_signal_handlers
    out, msg_dir = sys.argv[1], sys.argv[2]
    ts = build_typestore(msg_dir)
    recorder = EpisodeRecorder(out, typestore=ts)
    install_signal_handlers(recorder)
    recorder.start_episode('killed')
    F = ts.types['std_msgs/msg/Float64MultiArray']
    L = ts.types['std_msgs/msg/MultiArrayLayout']
    image = np.zeros(100_000, np.uint8)
    Image = ts.types['sensor_msgs/msg/Image']
    H = ts.types['std_msgs/msg/Header']
    T = ts.types['builtin_interfaces/msg/Time']
    print('READY', flush=True)
    i = 0
    while True:
        data = ts.serialize_cdr(F(layout=L(dim=[], data_offset=0), data=np.full(14, float(i))),
                                'std_msgs/msg/Float64MultiArray')
        if recorder.write('executed_command', 'std_msgs/msg/Float64MultiArray', data, 10**9 + i * 10**6):
            print(i, flush=True)
        if i % 5 == 0:
            img = Image(header=H(stamp=T(sec=0, nanosec=i), frame_id=''), height=1, width=100_000,
                        encoding='mono8', is_bigendian=0, step=100_000, data=image)
            recorder.write('cam_high/image_raw', 'sensor_msgs/msg/Image',
                           ts.serialize_cdr(img, 'sensor_msgs/msg/Image'), 10**9 + i * 10**6)
        i += 1
        time.sleep(0.001)
''')


def _run_child_and_signal(tmp_path: Path, signum: int, min_accepted: int = 150) -> tuple[int, int, str]:
    proc = subprocess.Popen(
        [sys.executable, '-c', CHILD, str(tmp_path), str(MSG_DIR)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, 'PYTHONPATH': str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', '')},
    )
    last = -1
    deadline = time.monotonic() + 60
    assert proc.stdout.readline().strip() == 'READY', proc.stderr.read()
    while last < min_accepted:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        last = int(line)
        assert time.monotonic() < deadline
    proc.send_signal(signum)
    rest, err = proc.communicate(timeout=60)
    lines = [int(x) for x in rest.split()]
    return (lines[-1] if lines else last), proc.returncode, err


def _executed_command_values(bag: Path, typestore) -> list[int]:
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == 'executed_command']
        return [int(typestore.deserialize_cdr(d, c.msgtype).data[0]) for c, _, d in reader.messages(conns)]


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_signal_mid_episode_keeps_every_accepted_message(tmp_path, typestore, signum):
    last_accepted, returncode, err = _run_child_and_signal(tmp_path, signum)
    assert returncode != 0  # the signal still ends the process
    bag = tmp_path / 'killed'
    assert is_bag_closed(bag), err  # closed by the handler, no recovery needed
    values = _executed_command_values(bag, typestore)
    # Every message the child reported as accepted is there, in order, nothing else.
    assert values == list(range(len(values))) and len(values) >= last_accepted + 1
    assert [e['event'] for e in read_bag_events(bag, typestore)] == ['START', 'STOP']


def test_sigkill_then_recover(tmp_path, typestore):
    last_accepted, returncode, _ = _run_child_and_signal(tmp_path, signal.SIGKILL)
    assert returncode == -signal.SIGKILL
    bag = tmp_path / 'killed'
    assert not is_bag_closed(bag)
    with pytest.raises(Exception):
        Reader(bag).open()  # rosbags cannot read it as it is
    result = recover(bag, typestore)
    assert not result.already_closed and result.messages > 0
    assert is_bag_closed(bag)
    values = _executed_command_values(bag, typestore)
    # Accepted messages still queued in the killed process are gone; what was flushed is a
    # gap-free prefix (the writer flushes after every batch it drains).
    assert values == list(range(len(values))) and 0 < len(values) <= last_accepted + 1
    with Reader(bag) as reader:
        assert {c.topic for c in reader.connections} >= {'executed_command', 'cam_high/image_raw'}
    meta = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert meta['custom_data']['episode_id'] == 'killed'
    assert recover(bag, typestore).already_closed
    assert sorted(p.name for p in bag.iterdir()) == ['episode.yaml', 'killed.mcap', 'metadata.yaml']


def _unclosed_mcap_bytes(tmp_path, typestore, count):
    """An episode's MCAP file as a SIGKILL would leave it (no summary, no footer): ``count``
    numbered commands written in small batches, so in several chunks."""
    recorder = EpisodeRecorder(tmp_path / 'src', typestore=typestore, flush_max_messages=4)
    bag = recorder.start_episode('ep')
    F = typestore.types['std_msgs/msg/Float64MultiArray']
    L = typestore.types['std_msgs/msg/MultiArrayLayout']
    for i in range(count):
        data = typestore.serialize_cdr(F(layout=L(dim=[], data_offset=0), data=np.full(3, float(i))),
                                       'std_msgs/msg/Float64MultiArray')
        recorder.write('executed_command', 'std_msgs/msg/Float64MultiArray', data, 10**9 + i)
        time.sleep(0.002)
    deadline = time.monotonic() + 10
    while recorder.stats().written < count and time.monotonic() < deadline:
        time.sleep(0.01)
    raw = (bag / 'ep.mcap').read_bytes()
    recorder.close()
    return raw


def test_recover_torn_tail(tmp_path, typestore):
    """A file cut at any byte recovers to the messages of its complete chunks."""
    raw = _unclosed_mcap_bytes(tmp_path, typestore, 40)
    counts = []
    for cut in (len(raw), len(raw) - 7, len(raw) * 2 // 3, len(raw) // 3):
        torn = tmp_path / f'cut{cut}' / 'ep'
        torn.mkdir(parents=True)
        (torn / 'ep.mcap').write_bytes(raw[:cut])
        result = recover(torn, typestore)
        values = _executed_command_values(torn, typestore)
        assert values == list(range(len(values)))
        counts.append(len(values))
        assert result.messages == len(values) + 1  # + the START event
    assert counts[0] == 40 and counts == sorted(counts, reverse=True) and counts[-1] < 40


def test_recover_command_on_a_truncated_bag(tmp_path, typestore, capsys):
    """`cosmos-policy-ros recover BAG` turns a cut file into a readable bag; a closed bag is left alone."""
    from cosmos_policy_ros.cli import main

    raw = _unclosed_mcap_bytes(tmp_path, typestore, 20)
    torn = tmp_path / 'torn' / 'ep'
    torn.mkdir(parents=True)
    (torn / 'ep.mcap').write_bytes(raw[:len(raw) * 2 // 3])
    assert main(['recover', str(torn)]) == 0
    assert 'recovered' in capsys.readouterr().out
    values = _executed_command_values(torn, typestore)
    assert 0 < len(values) < 20 and values == list(range(len(values)))
    assert main(['recover', str(torn)]) == 0
    assert 'already closed' in capsys.readouterr().out
    assert main(['recover', str(tmp_path / 'missing')]) == 2
    assert 'not a directory' in capsys.readouterr().err


def test_recording_resumes_after_a_disk_error_in_an_earlier_episode(tmp_path, typestore):
    def string(text):
        return typestore.serialize_cdr(typestore.types["std_msgs/msg/String"](data=text), "std_msgs/msg/String")

    with EpisodeRecorder(tmp_path, typestore=typestore) as recorder:
        recorder.start_episode("first")

        def disk_full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        recorder._episode.writer.write = disk_full  # the disk fills up during this episode
        recorder.write("/x", "std_msgs/msg/String", string("lost"), 1)
        deadline = time.monotonic() + 5
        while recorder._error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert recorder._error is not None
        with pytest.raises(RecorderError):
            recorder.stop_episode()
        bag = recorder.start_episode("second")  # room again: the next episode records
        assert recorder.write("/x", "std_msgs/msg/String", string("kept"), 2)
        recorder.stop_episode()
    with Reader(bag) as reader:
        connections = [c for c in reader.connections if c.topic == "/x"]
        assert [typestore.deserialize_cdr(raw, c.msgtype).data for c, _, raw in reader.messages(connections)] == ["kept"]
