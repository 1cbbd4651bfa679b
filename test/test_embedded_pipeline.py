"""Issue 10 infrastructure: in-process demonstrations agree with the recording path run in
sim eval mode; eval output; checkpoint/robot mismatches are refused naming both sides."""
import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import REPO

from cosmos_policy_ros.config import ConfigError, load_config
from cosmos_policy_ros.control.policies import check_checkpoint_matches_robot
from cosmos_policy_ros.learning.episodes import read_episode
from cosmos_policy_ros.learning.evaluation import chunk_latency_ms, format_table, plot_eval, summarize

ALOHA = load_config("aloha")


def _ckpt(**changes):
    base = dict(joint_names=ALOHA.joint_names, camera_names=("cam_high", "cam_left_wrist"), image_size=64)
    base.update(changes)
    return SimpleNamespace(**base)


def test_checkpoint_matching_robot_is_accepted():
    check_checkpoint_matches_robot(_ckpt(), ALOHA, "ckpt")


@pytest.mark.parametrize("changes, both", [
    (dict(camera_names=("cam_high", "cam_top")), ("cam_top", "cam_left_wrist")),
    (dict(joint_names=ALOHA.joint_names[:7]), ("left_waist", "right_gripper")),
    (dict(image_size=480), ("480", "240x320")),
])
def test_checkpoint_mismatch_is_refused_naming_both(changes, both):
    with pytest.raises(ConfigError) as err:
        check_checkpoint_matches_robot(_ckpt(**changes), ALOHA, "ckpt")
    for text in both:
        assert text in str(err.value)


def test_eval_summary_table_and_plot(tmp_path):
    results = [
        {"seed": 100000, "success": True, "max_reward": 4, "mode": "eval", "paused_ticks": 2, "paused_wall_s": 1.0,
         "reward_trace": [[0.0, 0], [1.0, 2], [2.0, 4]], "predicted_values": [[0.0, 0.2], [1.0, 0.8]]},
        {"seed": 100001, "success": False, "max_reward": 1, "mode": "eval", "paused_ticks": 2, "paused_wall_s": 3.0,
         "reward_trace": [[0.0, 0], [2.0, 1]], "predicted_values": []},
    ]
    summary = summarize(results, 12.0, chunk_latency_ms(results, tmp_path / "missing.log"))
    assert summary["successes"] == 1 and summary["success_rate"] == 0.5 and summary["mean_max_reward"] == 2.5
    assert summary["chunk_latency_ms"] == pytest.approx(1000.0)
    table = format_table(summary)
    assert "50%" in table and "mode: eval" in table
    plot_eval(results, tmp_path / "eval.png")
    assert (tmp_path / "eval.png").stat().st_size > 1000


def _run(args, cwd, timeout):
    env = dict(__import__("os").environ, PYTHONPATH=str(REPO), MUJOCO_GL="egl", ROS_LOCALHOST_ONLY="1")
    proc = subprocess.run([sys.executable, "-m", "cosmos_policy_ros.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_in_process_demos_match_the_recording_path_in_eval_mode(tmp_path):
    """One seeded 2 s expert episode both ways. The graph run is much slower than the
    in-process one (and its first chunk takes ~1 s of wall time to plan); in eval mode the
    sim waits for it, so both reach the same joints. Without eval mode the sim runs on
    while the expert plans and the episodes differ."""
    seed, length = 7, "2"
    _run(["demo", "--eval-mode", "--episodes", "1", "--seed", str(seed), "--episode-length", length,
          "--record", str(tmp_path / "bags"), "--out", str(tmp_path / "graph"), "--timeout", "150"], tmp_path, 200)
    _run(["bags-to-dataset", str(tmp_path / "bags"), "--out", str(tmp_path / "recorded"), "--no-progress",
          "--unlabeled", "success"], tmp_path, 120)
    _run(["demos", "--out", str(tmp_path / "direct"), "--episodes", "1", "--seed", str(seed),
          "--episode-length", length, "--keep-failures"], tmp_path, 120)
    graph = json.loads((tmp_path / "graph" / "results.json").read_text())[0]
    assert graph["mode"] == "eval" and graph["eval_timeouts"] == 0

    import h5py

    def layout(path):
        with h5py.File(path) as f:
            keys = {}
            f.visititems(lambda name, obj: keys.__setitem__(name, (obj.dtype.str, obj.shape[1:]))
                         if isinstance(obj, h5py.Dataset) else None)
            return keys, set(f.attrs)
    rec_keys, rec_attrs = layout(tmp_path / "recorded" / "episode_0.hdf5")
    dir_keys, dir_attrs = layout(tmp_path / "direct" / "episode_0.hdf5")
    assert rec_keys == dir_keys
    assert dir_attrs <= rec_attrs and rec_attrs - dir_attrs <= {"success_score"}
    for name in ("dataset_statistics.json", "aloha_dataset_statistics.json", "dataset_info.json"):
        assert (tmp_path / "direct" / name).is_file()

    recorded = read_episode(tmp_path / "recorded" / "episode_0.hdf5")
    direct = read_episode(tmp_path / "direct" / "episode_0.hdf5")
    assert abs(len(recorded.qpos) - len(direct.qpos)) <= 3
    # The recorder logs receive times, which a loaded machine delays: allow a shift of up to
    # six ticks (0.12 s) between the grids.
    n = min(len(recorded.qpos), len(direct.qpos)) - 12
    best = min(np.abs(recorded.qpos[6 + s:6 + s + n] - direct.qpos[6:6 + n]).max() for s in range(-6, 7))
    assert best < 0.03, best
    # The expert moved the arms far from the start (a frozen or skipped start would not match).
    assert np.abs(direct.qpos[-1] - direct.qpos[0]).max() > 0.3
    assert np.allclose(graph["final_joint_positions"], direct.qpos[-1], atol=0.05)


def test_demos_in_worker_processes_write_the_same_files_in_seed_order(tmp_path):
    """Each episode depends on its seed alone: two worker processes give the files (and
    statistics) one process gives, named in seed order, and no staging files are left."""
    from cosmos_policy_ros.learning.demos import generate_demos

    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        generate_demos(out, 3, seed=11, config=ALOHA, episode_length_s=0.6, keep_failures=True,
                       progress=lambda _: None, cameras=["cam_high"], workers=workers)
        runs[workers] = out
        assert sorted(p.name for p in out.iterdir() if p.name.startswith((".", "episode"))) == \
            [f"episode_{i}.hdf5" for i in range(3)]
    for i in range(3):
        one = read_episode(runs[1] / f"episode_{i}.hdf5")
        two = read_episode(runs[2] / f"episode_{i}.hdf5")
        assert one.attrs["episode_id"] == two.attrs["episode_id"] == f"aloha_sim_seed{11 + i}"
        assert np.array_equal(one.qpos, two.qpos) and np.array_equal(one.action, two.action)
        assert np.array_equal(one.frame("cam_high", 0), two.frame("cam_high", 0))
    assert (runs[1] / "dataset_statistics.json").read_text() == (runs[2] / "dataset_statistics.json").read_text()


def test_eval_planning_defaults_to_the_planning_model_beside_the_policy(tmp_path):
    from cosmos_policy_ros.learning.evaluation import companion_planning_checkpoint
    from cosmos_policy_ros.model.checkpoint import shipped_checkpoint

    policy = tmp_path / "robot_policy"
    policy.mkdir()
    assert companion_planning_checkpoint(policy) is None and companion_planning_checkpoint("") is None
    (tmp_path / "robot_policy_planning").mkdir()
    assert companion_planning_checkpoint(policy) is None  # not a checkpoint folder
    (tmp_path / "robot_policy_planning" / "cosmos_policy.json").write_text("{}")
    assert companion_planning_checkpoint(policy) == tmp_path / "robot_policy_planning"
    shipped = shipped_checkpoint("aloha_sim_transfer_cube")
    assert companion_planning_checkpoint(shipped) == shipped.with_name("aloha_sim_transfer_cube_planning")
