"""The data loop end to end on the sim: record episodes through the real graph, label them,
convert to training episodes, fine-tune the tiny planning model, plan with it."""
import json
import re

import h5py
import pytest
import yaml

pytest.importorskip("rclpy")
pytest.importorskip("gym_aloha")

from cosmos_policy_ros.cli import main  # noqa: E402
from cosmos_policy_ros.control.policies import default_checkpoint  # noqa: E402
from cosmos_policy_ros.recording import read_outcome  # noqa: E402
from conftest import REPO  # noqa: E402


def test_record_label_convert_finetune_plan(tmp_path):
    bags = tmp_path / "bags"
    assert main(["demo", "--episodes", "2", "--episode-length", "2", "--record", str(bags),
                 "--out", str(tmp_path / "record"), "--timeout", "240"]) == 0
    episodes = sorted(p for p in bags.iterdir() if p.is_dir())
    assert len(episodes) == 2
    # The operator corrects one label afterwards (2 s is too short to finish the task).
    assert read_outcome(episodes[0]).success is False
    assert main(["label", str(episodes[0]), "--success", "--score", "0.8", "--note", "operator"]) == 0
    assert read_outcome(episodes[0]).score == pytest.approx(0.8)

    dataset = tmp_path / "rollouts"
    assert main(["bags-to-dataset", str(bags), "--out", str(dataset), "--no-progress"]) == 0
    files = sorted(dataset.glob("episode_*.hdf5"))
    assert len(files) == 2
    with h5py.File(files[0]) as f:
        assert f["action"].shape[1] == 14 and f["observations/images/cam_high"].ndim == 4
        # The relabelled outcome reaches the episode file; as officially, a positive score gives
        # full-success value targets (the score is kept for balancing and --value-rule scaled).
        assert f.attrs["success_score"] == pytest.approx(0.8) and f.attrs["value_rule"] == "official"
        assert f["value"][-1] == pytest.approx(1.0)
    stats = json.loads((dataset / "dataset_statistics.json").read_text())
    assert len(stats["actions_min"]) == 14

    planning_model = tmp_path / "planning_ft"
    planning_seed = default_checkpoint().parent / "tiny_cosmos_planning"
    assert main(["train", "--checkpoint", str(planning_seed), "--rollouts", str(dataset), "--out", str(planning_model),
                 "--steps", "3", "--batch-size", "2", "--log-every", "1", "--task", "transfer the cube"]) == 0
    assert (planning_model / "cosmos_policy.json").is_file()

    config = yaml.safe_load((REPO / "config" / "aloha.yaml").read_text())
    config["planning"]["deadline_s"] = 120.0  # a loaded CI machine must not turn this into a fallback test
    config["execution"]["max_chunk_age_s"] = 150.0
    # The tiny random policy samples joints up to ~6 rad outside the ViperX ranges, and
    # planner_node refuses candidates outside the limits: widen them so its samples are planned.
    config["limits"]["lower"] = [-20.0] * 14
    config["limits"]["upper"] = [20.0] * 14
    config_path = tmp_path / "aloha_planning.yaml"
    config_path.write_text(yaml.safe_dump(config))
    assert main(["demo", "--config", str(config_path), "--policy", "cosmos", "--planning",
                 "--planning-checkpoint", str(planning_model), "--episode-length", "2",
                 "--out", str(tmp_path / "plan"), "--timeout", "300"]) == 0
    policy_log = (tmp_path / "plan" / "logs" / "policy_node.log").read_text()
    planned = [int(n) for n in re.findall(r"planned (\d+)", policy_log)]
    assert planned and max(planned) >= 1, policy_log[-2000:]
    assert "planner ready" in (tmp_path / "plan" / "logs" / "planner_node.log").read_text()
