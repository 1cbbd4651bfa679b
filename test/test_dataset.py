"""bags_to_dataset on synthetic bags: ALOHA layout, alignment, statistics, value targets, errors."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from cosmos_policy_ros.learning.bags_to_dataset import (
    DatasetConfig,
    DatasetError,
    add_bags_to_dataset_arguments,
    bags_to_dataset,
    run_bags_to_dataset,
)
from cosmos_policy_ros.learning.episodes import DEFAULT_GAMMA, read_episode, value_targets
from cosmos_policy_ros.recording import EpisodeOutcome, EpisodeRecorder, build_typestore, label_episode

REPO = Path(__file__).resolve().parent.parent
ARM_NAMES = ['waist', 'shoulder', 'elbow', 'forearm_roll', 'wrist_angle', 'wrist_rotate', 'left_finger']
CLOSED, OPEN = 0.01844, 0.05800
H, W = 6, 8
T0 = 5_000_000_000  # ns


@pytest.fixture(scope='module')
def typestore():
    return build_typestore(REPO / 'msg')


def joint_truth(side: str, t_s: np.ndarray) -> np.ndarray:
    """[N, 7] JointState positions: arm joints smooth in time, finger in metres."""
    k = 0.0 if side == 'left' else 1.0
    arm = np.stack([np.sin(1.3 * t_s + j + k) for j in range(6)], axis=1)
    finger = CLOSED + (OPEN - CLOSED) * (0.5 + 0.5 * np.cos(2.0 * t_s + k))[:, None]
    return np.concatenate([arm, finger], axis=1)


def command_truth(t_s: np.ndarray) -> np.ndarray:
    return np.stack([0.1 * j + 2.0 * t_s for j in range(14)], axis=1)


def _hdr(ts, ns):
    return ts.types['std_msgs/msg/Header'](
        stamp=ts.types['builtin_interfaces/msg/Time'](sec=ns // 10**9, nanosec=ns % 10**9), frame_id='')


def write_synthetic_bag(
    out: Path, typestore, episode_id: str, *, duration_s: float = 1.0, outcome: EpisodeOutcome | None = None,
    skip_topics: tuple[str, ...] = (), namespace: str = '', seed: int = 0,
) -> Path:
    """Joint states at ~40 Hz with jitter, commands at 50 Hz (phase-shifted), three cameras
    at ~30 Hz whose pixels encode (camera, frame index); cam_right_wrist is bgr8."""
    t = typestore.types
    rng = np.random.default_rng(seed)
    msgs = []  # (stamp, topic, msgtype, bytes)
    for side in ('left', 'right'):
        stamps = T0 + (np.arange(0, duration_s + 0.05, 0.025) * 1e9).astype(np.int64)
        stamps[1:-1] += rng.integers(-3_000_000, 3_000_000, len(stamps) - 2)
        pos = joint_truth(side, (stamps - T0) / 1e9)
        for stamp, p in zip(stamps, pos):
            msg = t['sensor_msgs/msg/JointState'](
                header=_hdr(typestore, int(stamp)), name=ARM_NAMES[::-1] + ['right_finger'],
                position=np.concatenate([p[::-1], [0.0]]), velocity=np.array([], dtype=np.float64),
                effort=np.array([], dtype=np.float64))
            msgs.append((int(stamp), f'{namespace}follower_{side}/joint_states', 'sensor_msgs/msg/JointState',
                         typestore.serialize_cdr(msg, 'sensor_msgs/msg/JointState')))
    cmd_stamps = T0 + 7_000_000 + (np.arange(0, duration_s, 0.02) * 1e9).astype(np.int64)
    for stamp, c in zip(cmd_stamps, command_truth((cmd_stamps - T0) / 1e9)):
        msg = t['std_msgs/msg/Float64MultiArray'](
            layout=t['std_msgs/msg/MultiArrayLayout'](dim=[], data_offset=0), data=c)
        msgs.append((int(stamp), f'{namespace}executed_command', 'std_msgs/msg/Float64MultiArray',
                     typestore.serialize_cdr(msg, 'std_msgs/msg/Float64MultiArray')))
    for cam_index, cam in enumerate(('cam_high', 'cam_left_wrist', 'cam_right_wrist')):
        stamps = T0 + 3_000_000 * cam_index + (np.arange(0, duration_s + 0.04, 1 / 30) * 1e9).astype(np.int64)
        for frame_index, stamp in enumerate(stamps):
            rgb = np.zeros((H, W, 3), np.uint8)
            rgb[..., 0] = frame_index
            rgb[..., 1] = cam_index
            rgb[..., 2] = 200
            bgr = cam == 'cam_right_wrist'
            data = rgb[..., ::-1] if bgr else rgb
            msg = t['sensor_msgs/msg/Image'](
                header=_hdr(typestore, int(stamp)), height=H, width=W, encoding='bgr8' if bgr else 'rgb8',
                is_bigendian=0, step=W * 3, data=np.ascontiguousarray(data).reshape(-1))
            msgs.append((int(stamp), f'{namespace}{cam}/image_raw', 'sensor_msgs/msg/Image',
                         typestore.serialize_cdr(msg, 'sensor_msgs/msg/Image')))
    msgs.sort(key=lambda m: m[0])
    with EpisodeRecorder(out, typestore=typestore) as recorder:
        bag = recorder.start_episode(episode_id, {'task': 'transfer the cube'}, stamp_ns=T0 - 1)
        for stamp, topic, msgtype, data in msgs:
            if not any(topic.endswith(s) for s in skip_topics):
                assert recorder.write(topic, msgtype, data, stamp)
        recorder.stop_episode(outcome, stamp_ns=T0 + int(duration_s * 1e9) + 10**8)
    return bag


def test_value_targets_formula():
    v = value_targets(4, 1.0, gamma=0.5)
    np.testing.assert_allclose(v, [0.125, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(value_targets(3, 0.0, 0.9), [0, 0, 0])
    # Official rule (default): the loader rescales returns by the terminal reward itself
    # (2 G_t / r - 1 for r > 0), so a partial score 0.6 gives the full-success targets.
    np.testing.assert_allclose(value_targets(2, 0.6, 0.9), [0.9, 1.0], rtol=1e-6)
    # The scaled rule stays available: targets times the score.
    np.testing.assert_allclose(value_targets(2, 0.6, 0.9, rule='scaled'), [0.54, 0.6], rtol=1e-6)
    with pytest.raises(ValueError):
        value_targets(3, 1.0, gamma=0.0)
    with pytest.raises(ValueError, match='value rule'):
        value_targets(3, 1.0, rule='halved')


def test_default_gamma_is_the_official_aloha_gamma():
    assert DEFAULT_GAMMA == 0.998  # aloha dataset configs: gamma=0.998


def _episode(path):
    ep = read_episode(path, load_images=True)
    return {'qpos': ep.qpos, 'qvel': ep.qvel, 'action': ep.action, 'value': ep.value,
            'timestamps_ns': ep.timestamps_ns, 'images': ep.images, 'attrs': ep.attrs}


def test_bags_to_dataset_layout_alignment_stats_values(tmp_path, typestore):
    bags = [
        write_synthetic_bag(tmp_path / 'bags', typestore, 'ep_a', outcome=EpisodeOutcome(True, 0.8), seed=1),
        write_synthetic_bag(tmp_path / 'bags', typestore, 'ep_b', duration_s=0.7, outcome=EpisodeOutcome(False),
                            seed=2),
    ]
    config_path = REPO / 'config' / 'aloha.yaml'
    config = yaml.safe_load(config_path.read_text()) if config_path.exists() else None
    out = tmp_path / 'dataset'
    gamma = 0.9
    summaries = bags_to_dataset(bags, out, config, gamma=gamma, control_rate_hz=50.0, progress=False)
    assert [s.path.name for s in summaries] == ['episode_0.hdf5', 'episode_1.hdf5']

    # --- layout as ALOHA/ACT tools read it
    with h5py.File(out / 'episode_0.hdf5', 'r') as f:
        assert f.attrs['sim'] == False and f.attrs['compress'] == False  # noqa: E712 (numpy bools)
        assert f.attrs['success'] == True and f.attrs['success_score'] == pytest.approx(0.8)  # noqa: E712
        assert f.attrs['task_description'] == 'transfer the cube' and f.attrs['episode_id'] == 'ep_a'
        T = f['/action'].shape[0]
        assert f['/observations/qpos'].shape == (T, 14) and f['/observations/qvel'].shape == (T, 14)
        assert 'effort' not in f['/observations']  # the JointStates carried no effort
        for cam in ('cam_high', 'cam_left_wrist', 'cam_right_wrist'):
            ds = f[f'/observations/images/{cam}']
            assert ds.shape == (T, H, W, 3) and ds.dtype == np.uint8
        assert 'cam_low' not in f['/observations/images']  # optional and not recorded
    with h5py.File(out / 'episode_1.hdf5', 'r') as f:
        assert f.attrs['success'] == False and 'success_score' not in f.attrs  # noqa: E712

    ep = _episode(out / 'episode_0.hdf5')
    grid = ep['timestamps_ns']
    T = len(grid)
    # --- time grid: from the first instant all streams have data, at 50 Hz
    joint_start = T0  # both arms start at T0 (first stamp has no jitter)
    first_cam = T0 + 2 * 3_000_000
    first_cmd = T0 + 7_000_000
    assert grid[0] == max(joint_start, first_cam, first_cmd)
    np.testing.assert_array_equal(np.diff(grid), 20_000_000)
    assert grid[-1] <= T0 + 7_000_000 + int(0.98e9)  # last command bounds the end

    # --- joints: linear interpolation of the recorded samples (recomputed here from the
    # same jittered stamps), gripper normalized from finger metres to [0, 1]
    rng = np.random.default_rng(1)
    for side, cols in (('left', slice(0, 7)), ('right', slice(7, 14))):
        stamps = T0 + (np.arange(0, 1.05, 0.025) * 1e9).astype(np.int64)
        stamps[1:-1] += rng.integers(-3_000_000, 3_000_000, len(stamps) - 2)
        samples = joint_truth(side, (stamps - T0) / 1e9)
        samples[:, 6] = (samples[:, 6] - CLOSED) / (OPEN - CLOSED)
        expected = np.stack([np.interp(grid, stamps, samples[:, j]) for j in range(7)], axis=1)
        np.testing.assert_allclose(ep['qpos'][:, cols], expected, atol=1e-9)
        # and close to the truth itself (interpolation error of a smooth signal)
        truth = joint_truth(side, (grid - T0) / 1e9)
        np.testing.assert_allclose(ep['qpos'][:, cols][:, :6], truth[:, :6], atol=2e-3)
    assert 0.0 <= ep['qpos'][:, 6].min() and ep['qpos'][:, 6].max() <= 1.0
    # qvel: no velocities recorded -> derivative of qpos on the grid
    np.testing.assert_allclose(ep['qvel'], np.gradient(ep['qpos'], 0.02, axis=0))

    # --- actions: the commands are linear in time, so interpolation reproduces them exactly
    np.testing.assert_allclose(ep['action'], command_truth((grid - T0) / 1e9), atol=1e-9)

    # --- images: nearest frame in time; bgr8 converted to RGB
    for cam_index, cam in enumerate(('cam_high', 'cam_left_wrist', 'cam_right_wrist')):
        stamps = T0 + 3_000_000 * cam_index + (np.arange(0, 1.04, 1 / 30) * 1e9).astype(np.int64)
        nearest = np.abs(grid[:, None] - stamps[None, :]).argmin(axis=1)
        images = ep['images'][cam]
        np.testing.assert_array_equal(images[:, 0, 0, 0], nearest)
        assert (images[..., 1] == cam_index).all() and (images[..., 2] == 200).all()

    # --- value targets: score 0.8 > 0 -> full-success discounted targets (official rule) / failure -> zeros
    np.testing.assert_allclose(ep['value'], gamma ** np.arange(T - 1, -1, -1), rtol=1e-6)
    assert ep['attrs']['value_rule'] == 'official'
    np.testing.assert_allclose(_episode(out / 'episode_1.hdf5')['value'], 0.0)

    # --- statistics JSON in the official format, over all steps of both episodes
    eps = [_episode(out / f'episode_{i}.hdf5') for i in range(2)]
    actions = np.concatenate([e['action'] for e in eps])
    proprio = np.concatenate([e['qpos'] for e in eps])
    for name in ('dataset_statistics.json', 'aloha_dataset_statistics.json'):
        stats = json.loads((out / name).read_text())
        assert sorted(stats) == sorted(f'{k}_{s}' for k in ('actions', 'proprio')
                                       for s in ('min', 'max', 'mean', 'std', 'median'))
        for key, arr in (('actions', actions), ('proprio', proprio)):
            np.testing.assert_allclose(stats[f'{key}_min'], arr.min(0))
            np.testing.assert_allclose(stats[f'{key}_max'], arr.max(0))
            np.testing.assert_allclose(stats[f'{key}_mean'], arr.mean(0))
            np.testing.assert_allclose(stats[f'{key}_std'], arr.std(0))
            np.testing.assert_allclose(stats[f'{key}_median'], np.median(arr, 0))
            assert len(stats[f'{key}_min']) == 14
    info = json.loads((out / 'dataset_info.json').read_text())
    assert [e['episode_id'] for e in info['episodes']] == ['ep_a', 'ep_b']


def test_hold_actions_and_namespaced_topics(tmp_path, typestore):
    bag = write_synthetic_bag(tmp_path / 'bags', typestore, 'ns', outcome=EpisodeOutcome(True), namespace='/robot1/')
    out = tmp_path / 'dataset'
    bags_to_dataset([bag], out, None, control_rate_hz=25.0, action_interpolation='hold', progress=False)
    ep = _episode(out / 'episode_0.hdf5')
    grid = ep['timestamps_ns']
    np.testing.assert_array_equal(np.diff(grid), 40_000_000)
    cmd_stamps = T0 + 7_000_000 + (np.arange(0, 1.0, 0.02) * 1e9).astype(np.int64)
    last = np.searchsorted(cmd_stamps, grid, side='right') - 1
    np.testing.assert_allclose(ep['action'], command_truth((cmd_stamps[last] - T0) / 1e9))


def test_missing_topic_names_bag_and_topic(tmp_path, typestore):
    bag = write_synthetic_bag(tmp_path / 'bags', typestore, 'no_wrist', outcome=EpisodeOutcome(True),
                              skip_topics=('cam_left_wrist/image_raw',))
    with pytest.raises(DatasetError) as err:
        bags_to_dataset([bag], tmp_path / 'out', None, progress=False)
    text = str(err.value)
    assert str(bag) in text and "'cam_left_wrist/image_raw'" in text and 'camera cam_left_wrist' in text
    assert not list((tmp_path / 'out').glob('*.hdf5*'))  # nothing half-written
    # picking the cameras that are there works
    cfg = DatasetConfig.from_robot_config(None, cameras=['cam_high', 'cam_right_wrist'])
    bags_to_dataset([bag], tmp_path / 'out2', cfg, progress=False)

    bag2 = write_synthetic_bag(tmp_path / 'bags', typestore, 'no_cmd', outcome=EpisodeOutcome(True),
                               skip_topics=('executed_command',))
    with pytest.raises(DatasetError, match=r"no_cmd: no messages on topic 'executed_command' \(needed for actions\)"):
        bags_to_dataset([bag2], tmp_path / 'out3', None, progress=False)


def test_labels_unlabeled_and_unclosed_bags(tmp_path, typestore):
    bag = write_synthetic_bag(tmp_path / 'bags', typestore, 'unlabeled', duration_s=0.3)
    with pytest.raises(DatasetError, match='no outcome label'):
        bags_to_dataset([bag], tmp_path / 'o1', None, progress=False)
    bags_to_dataset([bag], tmp_path / 'o2', None, unlabeled='success', progress=False)
    assert _episode(tmp_path / 'o2' / 'episode_0.hdf5')['value'][-1] == 1.0
    label_episode(bag, False)
    bags_to_dataset([bag], tmp_path / 'o3', None, progress=False)
    relabeled = _episode(tmp_path / 'o3' / 'episode_0.hdf5')
    assert relabeled['attrs']['success'] == False  # noqa: E712

    unclosed = tmp_path / 'bags' / 'unclosed'
    shutil.copytree(bag, unclosed)
    (unclosed / 'metadata.yaml').unlink()
    with pytest.raises(DatasetError, match=r'was not closed.*recover'):
        bags_to_dataset([unclosed], tmp_path / 'o4', None, progress=False)


def test_cli_subcommand(tmp_path, typestore, capsys):
    root = tmp_path / 'rollouts'
    write_synthetic_bag(root, typestore, 'e0', duration_s=0.4, outcome=EpisodeOutcome(True))
    write_synthetic_bag(root, typestore, 'e1', duration_s=0.4, outcome=EpisodeOutcome(False))
    parser = argparse.ArgumentParser()
    add_bags_to_dataset_arguments(parser)
    args = parser.parse_args([str(root), '--out', str(tmp_path / 'ds'), '--gamma', '0.99', '--no-progress',
                              '--hdf5-compression', 'gzip'])
    assert run_bags_to_dataset(args) == 0
    assert 'wrote 2 episodes (1 successes' in capsys.readouterr().out
    ep = _episode(tmp_path / 'ds' / 'episode_1.hdf5')
    assert ep['attrs']['episode_id'] == 'e1' and ep['images']['cam_high'].shape[1:] == (H, W, 3)


def test_config_errors():
    aloha = yaml.safe_load((REPO / 'config' / 'aloha.yaml').read_text())
    bad = {**aloha, 'arms': {**aloha['arms'], 'left': {'joint_state_topic': 'x', 'joints': {'nope': 'waist'}}}}
    with pytest.raises(DatasetError, match='not in joint_names'):
        DatasetConfig.from_robot_config(bad)
    with pytest.raises(DatasetError, match='exactly one arm'):
        DatasetConfig.from_robot_config({**aloha, 'arms': {'left': aloha['arms']['left']}})
    with pytest.raises(DatasetError, match='not in config cameras'):
        DatasetConfig.from_robot_config(None, cameras=['cam_side'])
    cfg = DatasetConfig.from_robot_config({**aloha, 'camera_transport': 'compressed'})
    assert cfg.cameras['cam_high'] == 'cam_high/image_raw/compressed'


def test_partial_score_value_rule_official_by_default_scaled_on_request(tmp_path, typestore):
    bag = write_synthetic_bag(tmp_path / 'bags', typestore, 'half', duration_s=0.3, outcome=EpisodeOutcome(True, 0.5))
    bags_to_dataset([bag], tmp_path / 'official', None, gamma=0.9, progress=False)
    bags_to_dataset([bag], tmp_path / 'scaled', None, gamma=0.9, value_rule='scaled', progress=False)
    official = read_episode(tmp_path / 'official' / 'episode_0.hdf5')
    scaled = read_episode(tmp_path / 'scaled' / 'episode_0.hdf5')
    steps_to_end = np.arange(official.num_steps - 1, -1, -1)
    np.testing.assert_allclose(official.value, 0.9 ** steps_to_end, rtol=1e-6)
    np.testing.assert_allclose(scaled.value, 0.5 * 0.9 ** steps_to_end, rtol=1e-6)
    assert scaled.attrs['value_rule'] == 'scaled' and official.terminal_reward == 0.5
    with pytest.raises(ValueError, match='value_rule'):
        bags_to_dataset([bag], tmp_path / 'bad', None, value_rule='half', progress=False)


def test_replay_reads_the_converters_rate_and_refuses_or_resamples(tmp_path, typestore):
    # The converter writes control_rate_hz (not fps); the replay rate check must see it.
    from cosmos_policy_ros.control.replay import EpisodeFileError, ReplayPolicy
    from cosmos_policy_ros.types import Observation

    bag = write_synthetic_bag(tmp_path / 'bags', typestore, 'replay', duration_s=0.5, outcome=EpisodeOutcome(True))
    bags_to_dataset([bag], tmp_path / 'ds', None, control_rate_hz=25.0, progress=False)
    path = tmp_path / 'ds' / 'episode_0.hdf5'
    assert 'fps' not in read_episode(path).attrs
    with pytest.raises(EpisodeFileError, match='recorded at 25 Hz but the robot runs at 50 Hz'):
        ReplayPolicy(path, control_period_s=0.02)
    actions = read_episode(path).action
    same_rate = ReplayPolicy(path, control_period_s=0.04, horizon=4)
    np.testing.assert_array_equal(same_rate.infer(Observation(0, {}, np.zeros(14))).actions, actions[:4])
    resampled = ReplayPolicy(path, control_period_s=0.02, horizon=5, resample=True)
    chunk = resampled.infer(Observation(0, {}, np.zeros(14))).actions
    np.testing.assert_allclose(chunk[[0, 2, 4]], actions[:3])
    np.testing.assert_allclose(chunk[1], (actions[0] + actions[1]) / 2)
