"""Issue 11's loop, its pieces: rollout collection perturbations (off by default), bad rollout
bags refused or skipped with a reason, value-eval's metrics, the eval's 95 % interval, and the
loop end to end at toy size (collect through the graph -> planning fine-tune -> value-eval)."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO
from test_dataset import write_synthetic_bag

from cosmos_policy_ros.config import ConfigError, load_config
from cosmos_policy_ros.learning.bags_to_dataset import DatasetError, bags_to_dataset
from cosmos_policy_ros.learning.evaluation import (
    format_table,
    summarize,
    wilson_interval,
)
from cosmos_policy_ros.learning.rollouts import seed_overlap
from cosmos_policy_ros.learning.value_eval import (
    RolloutPoint,
    auroc,
    evaluate_checkpoint,
    rollout_points,
)
from cosmos_policy_ros.recording import EpisodeOutcome, build_typestore
from cosmos_policy_ros.types import Observation, PolicyOutput

TINY = REPO / "cosmos_policy_ros" / "checkpoints" / "tiny_cosmos"


# ----------------------------------------------------------------------------- statistics
def test_wilson_interval_matches_known_values_and_stays_in_0_1():
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and high == pytest.approx(3.8416 / 23.8416, abs=1e-4)  # z^2 / (n + z^2)
    low, high = wilson_interval(10, 20)
    assert (low, high) == (pytest.approx(0.2993, abs=1e-3), pytest.approx(0.7007, abs=1e-3))
    low, high = wilson_interval(20, 20)
    assert high == 1.0 and low == pytest.approx(1 - 3.8416 / 23.8416, abs=1e-4)
    with pytest.raises(ValueError):
        wilson_interval(21, 20)
    summary = summarize([{"success": s, "max_reward": 4 * s, "mode": "eval"} for s in (1, 0, 0, 0)], 1.0, None)
    assert summary["success_rate_ci95"] == [pytest.approx(0.0456, abs=1e-3), pytest.approx(0.6994, abs=1e-3)]
    assert "5%-70%" in format_table(summary) and "planning: off" in format_table(summary)


def test_auroc_against_pairwise_counting():
    assert auroc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert auroc([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 0.0
    assert auroc([0.5, 0.5, 0.5], [1, 0, 1]) == 0.5
    assert auroc([0.3, 0.4], [1, 1]) is None
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    labels = rng.random(60) < 0.4
    pos, neg = scores[labels], scores[~labels]
    pairwise = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert auroc(scores, labels) == pytest.approx(pairwise)


# ----------------------------------------------------------------------- collection settings
def test_object_range_scale_one_is_gym_alohas_sampler_and_wider_ranges_widen():
    utils = pytest.importorskip("gym_aloha.utils")
    from cosmos_policy_ros.sim.aloha_sim import sample_object_pose

    for seed in (0, 7, 200_000):
        np.testing.assert_array_equal(sample_object_pose("transfer_cube", seed, 1.0), utils.sample_box_pose(seed))
        np.testing.assert_allclose(sample_object_pose("insertion", seed, 1.0),
                                   np.concatenate(utils.sample_insertion_pose(seed)), atol=1e-12)
    wide = np.array([sample_object_pose("transfer_cube", s, 2.0)[:2] for s in range(200_000, 200_200)])
    assert wide[:, 0].min() < -0.05 and wide[:, 0].max() > 0.25  # gym-aloha: x in [0, 0.2]
    assert wide[:, 1].min() < 0.35 and wide[:, 1].max() > 0.65  # y in [0.4, 0.6]
    assert abs(wide[:, 0].mean() - 0.1) < 0.03  # about the same centre


def test_collection_settings_default_off_and_checked():
    config = load_config("aloha")
    assert config.collection.action_noise_rad == 0.0 and config.collection.object_range_scale == 1.0
    with pytest.raises(ConfigError, match="collection"):
        load_config("aloha", {"collection.object_range_scale": 3.0})
    with pytest.raises(ConfigError, match="collection"):
        load_config("aloha", {"collection.action_noise_rad": -0.1})


class _ZeroPolicy:
    resets = 0

    def infer(self, observation):
        return PolicyOutput(actions=np.zeros((4, 14)), predicted_value=0.5)

    def reset(self):
        self.resets += 1


def test_action_noise_is_one_offset_per_chunk_on_arm_joints_and_absent_when_off():
    from cosmos_policy_ros.control.action_noise import (
        ChunkOffsetNoise,
        with_action_noise,
    )

    config = load_config("aloha")
    policy = _ZeroPolicy()
    assert with_action_noise(policy, config) is policy  # off: no wrapper in the control path
    noisy = with_action_noise(policy, load_config("aloha", {"collection.action_noise_rad": 0.1}))
    assert isinstance(noisy, ChunkOffsetNoise)
    obs = Observation(stamp_ns=0, images={}, joint_positions=np.zeros(14))
    first = noisy.infer(obs)
    grippers = [config.joint_names.index(n) for n in ("left_gripper", "right_gripper")]
    assert np.all(first.actions[:, grippers] == 0) and first.predicted_value == 0.5
    arms = [i for i in range(14) if i not in grippers]
    assert np.all(first.actions[:, arms] != 0) and np.all(first.actions == first.actions[0])  # constant per chunk
    assert not np.array_equal(noisy.infer(obs).actions, first.actions)  # a new offset for the next chunk
    noisy.reset()
    episode_1 = noisy.infer(obs).actions
    again = with_action_noise(_ZeroPolicy(), load_config("aloha", {"collection.action_noise_rad": 0.1}))
    again.reset()
    np.testing.assert_array_equal(again.infer(obs).actions, episode_1)  # seeded by (noise_seed, episode)
    assert policy.resets == 1
    with pytest.raises(ConfigError, match="planning"):
        with_action_noise(policy, load_config("aloha", {"collection.action_noise_rad": 0.1, "planning.enabled": True}))


def test_rollout_seeds_may_not_reach_into_the_held_out_eval_seeds():
    assert seed_overlap(200_000, 500) == ""
    assert seed_overlap(0, 60) == ""
    assert "held-out" in seed_overlap(99_990, 20)
    assert "held-out" in seed_overlap(150_000, 1)


# -------------------------------------------------------------------------------- bad bags
@pytest.fixture(scope="module")
def typestore():
    return build_typestore(REPO / "msg")


def _set_signature(bag: Path, **changes) -> None:
    info = yaml.safe_load((bag / "episode.yaml").read_text())
    signature = load_config("aloha").data_signature()
    info["metadata"]["robot_signature"] = {**signature, **changes}
    (bag / "episode.yaml").write_text(yaml.safe_dump(info))


@pytest.fixture
def bad_bags(tmp_path, typestore):
    """A good bag, a truncated one (recorder killed), an unlabeled one, one of another robot
    config, one with a garbled label."""
    root = tmp_path / "bags"
    good = write_synthetic_bag(root, typestore, "good", duration_s=0.3, outcome=EpisodeOutcome(True), seed=1)
    _set_signature(good)
    truncated = root / "truncated"
    shutil.copytree(good, truncated)
    (truncated / "metadata.yaml").unlink()
    mcap = next(truncated.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    unlabeled = write_synthetic_bag(root, typestore, "unlabeled", duration_s=0.3, seed=2)
    other = write_synthetic_bag(root, typestore, "other_robot", duration_s=0.3, outcome=EpisodeOutcome(False), seed=3)
    _set_signature(other, robot="aloha_real", gripper_finger_m={"left_gripper": [0.044, 0.0579],
                                                                 "right_gripper": [0.044, 0.0579]})
    garbled = write_synthetic_bag(root, typestore, "garbled", duration_s=0.3, outcome=EpisodeOutcome(True), seed=4)
    (garbled / "outcome.yaml").write_text("note: success key missing\n")
    return {"good": good, "truncated": truncated, "unlabeled": unlabeled, "other": other, "garbled": garbled}


def test_bad_bags_are_refused_together_and_nothing_is_written(tmp_path, bad_bags):
    bags = [bad_bags[k] for k in ("good", "truncated", "unlabeled", "other", "garbled")]
    with pytest.raises(DatasetError) as err:
        bags_to_dataset(bags, tmp_path / "ds", load_config("aloha"), progress=False)
    text = str(err.value)
    assert "4 of 5 bags cannot be converted" in text and "--skip-invalid" in text
    assert f"{bad_bags['truncated']}: bag was not closed" in text and "recover" in text
    assert f"{bad_bags['unlabeled']}: episode has no outcome label" in text
    assert f"{bad_bags['other']}: recorded with another robot config (robot 'aloha_real')" in text
    assert "gripper_finger_m" in text and "robot:" in text
    assert f"{bad_bags['garbled']}: " in text and "cannot be read" in text
    assert f"{bad_bags['good']}:" not in text
    assert not list((tmp_path / "ds").glob("episode_*"))


def test_bad_bags_skipped_on_request_each_reported_and_listed(tmp_path, bad_bags):
    reported = []
    bags = [bad_bags[k] for k in ("truncated", "good", "other", "unlabeled")]
    summaries = bags_to_dataset(bags, tmp_path / "ds", load_config("aloha"), invalid="skip", progress=False,
                                report=reported.append)
    assert [s.source_bag for s in summaries] == [bad_bags["good"]]
    info = json.loads((tmp_path / "ds" / "dataset_info.json").read_text())
    skipped = {Path(s["bag"]).name: s["reason"] for s in info["skipped_invalid"]}
    assert set(skipped) == {"truncated", "other_robot", "unlabeled"} and len(reported) == 3
    assert "not closed" in skipped["truncated"] and "another robot config" in skipped["other_robot"]
    with pytest.raises(DatasetError, match="every bag was skipped"):
        bags_to_dataset([bad_bags["truncated"]], tmp_path / "none", None, invalid="skip", progress=False,
                        report=reported.append)


def test_bags_to_dataset_cli_reports_bad_bags_without_a_traceback(tmp_path, bad_bags, capsys):
    from cosmos_policy_ros.cli import main

    root = bad_bags["good"].parent
    assert main(["bags-to-dataset", str(root), "--out", str(tmp_path / "a"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "bags-to-dataset: 4 of 5 bags cannot be converted" in err and "Traceback" not in err
    assert main(["bags-to-dataset", str(root), "--out", str(tmp_path / "b"), "--no-progress", "--skip-invalid"]) == 0
    assert "wrote 1 episodes" in capsys.readouterr().out


def test_unclosed_bag_without_an_mcap_file_is_reported_not_silently_dropped(tmp_path, bad_bags, capsys):
    from cosmos_policy_ros.cli import main

    empty = bad_bags["good"].parent / "killed_at_start"
    empty.mkdir()
    (empty / "episode.yaml").write_text(yaml.safe_dump({"episode_id": "killed_at_start", "metadata": {}}))
    assert main(["bags-to-dataset", str(empty.parent), "--out", str(tmp_path / "a"), "--no-progress"]) == 2
    assert f"{empty}: bag was not closed" in capsys.readouterr().err


# ----------------------------------------------------------------------------- value-eval
@pytest.fixture(scope="module")
def rollout_dataset(tmp_path_factory, typestore):
    """Two converted synthetic rollouts (2.5 s at 50 Hz), one success and one failure."""
    root = tmp_path_factory.mktemp("rollouts")
    bags = [write_synthetic_bag(root / "bags", typestore, f"ep{i}", duration_s=2.5, outcome=EpisodeOutcome(ok),
                                seed=i) for i, ok in enumerate((True, False))]
    bags_to_dataset(bags, root / "ds", None, progress=False)
    return root / "ds"


def test_rollout_points_are_the_chunk_boundaries_with_the_executed_chunk(rollout_dataset):
    from cosmos_policy_ros.learning.episodes import read_episode

    points = rollout_points(rollout_dataset, ("cam_high",), chunk_size=50, control_rate_hz=25.0)
    episode = read_episode(rollout_dataset / "episode_0.hdf5")
    per_episode = [p for p in points if p.episode == 0]
    assert len(per_episode) == len(range(0, episode.num_steps - 1, 100))  # every 50 steps at 25 Hz = 100 file steps
    second = per_episode[1]
    np.testing.assert_array_equal(second.observation.joint_positions, episode.qpos[100])
    np.testing.assert_array_equal(second.actions, episode.action[np.minimum(100 + 2 * np.arange(50),
                                                                           episode.num_steps - 1)])
    np.testing.assert_array_equal(second.future_joint_positions, episode.qpos[episode.num_steps - 1])
    assert second.value_target == pytest.approx(float(episode.value[-1])) and second.success
    assert {p.success for p in points if p.episode == 1} == {False}


class _OracleModel:
    """predict_outcomes that knows the future (value: 1 for successes, noise: optional)."""

    config = type("C", (), {"default_task": "transfer the cube"})()

    def __init__(self, truth: dict[int, RolloutPoint], flip: bool = False):
        self.truth, self.flip = truth, flip

    def predict_outcomes(self, observation, chunks, num_future_samples, num_value_samples, seed, ensemble_steps):
        point = self.truth[id(observation.joint_positions)]
        value = float(point.success != self.flip)
        future = np.broadcast_to(point.future_joint_positions, (1, num_future_samples, 14))
        return type("P", (), {"values": np.full((1, num_future_samples, num_value_samples), value),
                              "future_joint_positions": future})()


def test_value_metrics_with_an_oracle_and_an_inverted_model(rollout_dataset):
    points = rollout_points(rollout_dataset, ("cam_high",), chunk_size=50, control_rate_hz=25.0)
    truth = {id(p.observation.joint_positions): p for p in points}
    good = evaluate_checkpoint(_OracleModel(truth), points, 3, 5)
    assert good["value_auroc_points"] == 1.0 and good["value_auroc_episodes"] == 1.0
    assert good["future_proprio_l1"] == 0.0 and good["no_change_l1"] > 0 and good["world_model_ratio"] == 0.0
    assert good["episodes"] == 2 and good["successes"] == 1 and good["mean_value_failures"] == 0.0
    bad = evaluate_checkpoint(_OracleModel(truth, flip=True), points, 3, 5)
    assert bad["value_auroc_points"] == 0.0 and bad["value_mae"] > good["value_mae"]


# ------------------------------------------------------------------- the loop, toy sized
@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    pytest.importorskip("rclpy")
    pytest.importorskip("gym_aloha")
    from cosmos_policy_ros.learning.rollouts import collect_rollouts

    out = tmp_path_factory.mktemp("collect") / "rollouts"
    lines = []
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        summary = collect_rollouts(str(TINY), 2, 200_000, out, action_noise_rad=0.05, object_range_scale=1.5,
                                   episode_length_s=1.5, timeout_s=240, progress=lines.append)
    return out, summary, lines + printed.getvalue().splitlines()


def test_collect_rollouts_labels_every_bag_from_the_sim_and_converts_them(collected):
    out, summary, lines = collected
    assert summary["episodes"] == 2 and summary["dataset_episodes"] == 2 and summary["skipped_bags"] == []
    assert summary["successes"] + summary["failures"] == 2
    printed = "\n".join(lines)
    assert "episode 1/2 seed 200000:" in printed and "episode 2/2 seed 200001:" in printed
    for seed in (200000, 200001):
        outcome = yaml.safe_load((out / "bags" / f"aloha_sim_seed{seed}" / "outcome.yaml").read_text())
        assert outcome["source"] == "recorder" and f"sim seed {seed}: max reward" in outcome["note"]
    info = json.loads((out / "dataset" / "dataset_info.json").read_text())
    assert info["collection"]["action_noise_rad"] == 0.05 and info["collection"]["object_range_scale"] == 1.5
    assert [r["seed"] for r in info["collection"]["results"]] == [200000, 200001]
    config = load_config(out / "config.yaml")
    assert config.collection.action_noise_rad == 0.05 and config.sim.eval_mode
    sim_results = json.loads((out / "results.json").read_text())
    assert [r["object_range_scale"] for r in sim_results] == [1.5, 1.5]  # the sim node sampled the wider ranges
    assert "rollout collection: action noise 0.05 rad" in (out / "logs" / "policy_node.log").read_text()
    import h5py

    with h5py.File(out / "dataset" / "episode_0.hdf5") as f:  # the checkpoint's cameras only
        assert sorted(f["observations/images"]) == ["cam_high", "cam_left_wrist", "cam_right_wrist"]
    assert json.loads((out / "collection.json").read_text())["dataset_episodes"] == 2
    with pytest.raises(ValueError, match="earlier collection"):
        from cosmos_policy_ros.learning.rollouts import collect_rollouts

        collect_rollouts(str(TINY), 1, 200_000, out)


def test_a_bag_the_recorder_left_unlabelled_gets_the_sims_outcome_loudly(collected, tmp_path):
    from cosmos_policy_ros.learning.rollouts import _label_bags
    from cosmos_policy_ros.recording import read_outcome

    out, _, _ = collected
    bags = tmp_path / "bags"
    shutil.copytree(out / "bags", bags)
    results = json.loads((out / "results.json").read_text())
    (bags / results[0]["episode_id"] / "outcome.yaml").unlink()
    lines = []
    assert len(_label_bags(bags, results, lines.append)) == 2
    outcome = read_outcome(bags / results[0]["episode_id"])
    assert outcome.success == results[0]["success"] and "from the sim's results file" in outcome.note
    assert len(lines) == 1 and "no label in the bag" in lines[0]


def test_planning_model_recipe_resumes_and_value_eval_compares_it_with_the_policy(collected, tmp_path):
    from cosmos_policy_ros.learning.planning_model import (
        PlanningRecipe,
        build_planning_model,
    )
    from cosmos_policy_ros.learning.value_eval import value_eval

    out, _, _ = collected
    lines = []
    recipe = PlanningRecipe().quick()
    model = build_planning_model(TINY, tmp_path / "planning", tmp_path / "work", recipe,
                                 rollouts=out / "dataset", device="cpu", progress=lines.append)
    written = json.loads((model / "recipe.json").read_text())
    assert written["rollout_outcomes"]["episodes"] == 2 and written["policy"] == str(TINY)
    assert set(written["timings_s"]) >= {"demos_s", "rollouts_s", "train_s", "total_s"}
    assert (model / "cosmos_policy.json").is_file() and not list(model.glob("*.pt"))
    lines.clear()
    build_planning_model(TINY, tmp_path / "planning2", tmp_path / "work", recipe, rollouts=out / "dataset",
                         device="cpu", progress=lines.append)
    assert sum("skipped" in line for line in lines) == 2, lines  # demos and fine-tune; rollouts were given

    lines.clear()
    report = value_eval({"planning": str(model), "baseline": str(TINY)}, out / "dataset", 2, 2,
                        progress=lines.append)
    # Evaluated on its own training rollouts here (toy size): said so, not passed off as held out.
    assert report["not_held_out"] == {"planning": ["aloha_sim_seed200000", "aloha_sim_seed200001"]}
    assert any("not held out" in line for line in lines)
    planning, baseline = report["checkpoints"]["planning"], report["checkpoints"]["baseline"]
    assert planning["points"] == baseline["points"] == 2
    assert np.isfinite(planning["future_proprio_l1"]) and planning["no_change_l1"] == baseline["no_change_l1"]
    assert planning["future_proprio_l1"] != baseline["future_proprio_l1"]  # two models, not one twice


def test_planning_candidates_are_clamped_to_the_limits_the_executor_enforces():
    from cosmos_policy_ros.control.planning import clamp_candidates

    inside = PolicyOutput(actions=np.full((3, 2), 0.5))
    over = PolicyOutput(actions=np.array([[0.5, 1.17], [-2.0, 0.2], [0.1, 0.9]]), predicted_value=0.3)
    kept, clamped = clamp_candidates([inside, over], np.array([-1.0, 0.0]), np.array([1.0, 1.0]))
    assert kept is inside
    np.testing.assert_array_equal(clamped.actions, [[0.5, 1.0], [-1.0, 0.2], [0.1, 0.9]])
    assert clamped.predicted_value == 0.3


def test_eval_with_planning_defaults_to_the_planning_model_beside_the_policy_and_reports_an_interval(tmp_path):
    pytest.importorskip("rclpy")
    pytest.importorskip("gym_aloha")
    from cosmos_policy_ros.cli import main

    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(TINY), "--planning", "--episodes", "1", "--episode-length", "1.5",
                 "--out", str(out), "--timeout", "300"]) == 0
    report = json.loads((out / "eval.json").read_text())
    summary = report["summary"]
    planning = summary["planning"]
    companion = TINY.with_name(TINY.name + "_planning")  # tiny_cosmos_planning, shipped beside it
    assert planning["checkpoint"] == str(companion) and summary["checkpoint"] == str(TINY)
    assert (planning["num_candidates"], planning["num_future_samples"], planning["num_value_samples"],
            planning["aggregation"]) == (8, 3, 5, "majority_mean")
    assert planning["stats"]["planned"] >= 1 and planning["stats"]["fallbacks"] == "none", planning
    assert summary["success_rate_ci95"] == [0.0, pytest.approx(0.7935, abs=1e-3)]  # Wilson, 0 of 1
    assert "planner ready" in (out / "logs" / "planner_node.log").read_text()
    assert str(companion) in (out / "logs" / "planner_node.log").read_text()


def test_eval_table_compares_reports_on_the_same_seeds_only():
    from cosmos_policy_ros.learning.evaluation import comparison_table

    def report(successes, seeds=(100000, 100019), planning=None):
        results = [{"success": i < successes, "max_reward": 4 if i < successes else 1, "mode": "eval"}
                   for i in range(20)]
        summary = summarize(results, 1.0, None)
        if planning:
            summary["planning"] = {"checkpoint": planning}
        return {"seeds": list(seeds), "summary": summary}

    table = comparison_table({"plain": report(4), "best of 8": report(9, planning="ckpt_planning")})
    assert "| plain | - (no planning) | 20 | 4 | 20% | 8%-42% |" in table
    assert "| best of 8 | ckpt_planning | 20 | 9 | 45% | 26%-66% |" in table
    with pytest.raises(ValueError, match="different seeds"):
        comparison_table({"plain": report(4), "other": report(4, seeds=(100020, 100039))})
