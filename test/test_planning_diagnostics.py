"""planning-diagnostics: the plain policy drives (candidate 0), every chunk's candidates are
scored, and N copies of candidate 0 give the seed-only control."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmos_policy_ros.control.planning import ModelPlanner
from cosmos_policy_ros.learning.offline_eval import closed_loop
from cosmos_policy_ros.learning.planning_diagnostics import diagnose, summarize
from cosmos_policy_ros.model.checkpoint import shipped_checkpoint
from cosmos_policy_ros.model.cosmos_policy import CosmosPolicy


def test_summary_of_hand_made_points():
    points = [{"seed": 1, "candidate_pair_l1": 0.1, "candidate_end_spread": 0.2, "values": [0.5, 0.5, 0.5],
               "chosen": 0, "copy_values": [0.5, 0.5, 0.5]},
              {"seed": 2, "candidate_pair_l1": 0.3, "candidate_end_spread": 0.4, "values": [0.1, 0.9, 0.2],
               "chosen": 1, "copy_values": [0.1, 0.3, 0.1]}]
    s = summarize(points, [{"seed": 1, "success": True}, {"seed": 2, "success": False}])
    assert s["candidate_pair_l1_mean"] == pytest.approx(0.2)
    assert s["value_tie_fraction"] == 0.5 and s["chosen_other_than_0_fraction"] == 0.5
    assert s["chosen_histogram"] == {"0": 1, "1": 1}
    assert s["value_range_mean"] == pytest.approx(0.4) and s["copy_value_range_mean"] == pytest.approx(0.1)
    assert s["real_range_above_copy_fraction"] == 0.5
    assert s["action_effect_mean"] == pytest.approx((0.6 + 0.1) / 4)  # candidates 1.. minus their copies
    assert s["candidate0_value_auroc"] == 1.0  # the success's candidate 0 scored 0.5 > 0.1


def test_the_diagnosed_episode_is_the_plain_policys_and_every_chunk_is_scored():
    torch.set_num_threads(2)
    policy = CosmosPolicy.from_pretrained(shipped_checkpoint("aloha_sim_transfer_cube"), device="cpu",
                                          decode_future_images=False)
    planner = ModelPlanner(policy, num_future_samples=1, num_value_samples=1)
    report = diagnose(policy, planner, [100000], num_candidates=3, episode_length_s=1.9, progress=lambda _: None)
    points = report["points"]
    assert len(points) == 2  # 1.9 s at one 25-step chunk per second
    for p in points:
        assert len(p["values"]) == 3 and len(p["copy_values"]) == 3 and 0 <= p["chosen"] < 3
        assert p["candidate_pair_l1"] > 0  # different seeds give different chunks
        assert np.all(np.isfinite(p["values"]))
    # candidate 0 (the policy's own sample for its seed) executed: the plain policy's episode
    again = closed_loop(policy, [100000], episode_length_s=1.9, progress=lambda _: None)
    assert report["episodes"][0]["max_reward"] == again[0]["max_reward"]
    assert report["summary"]["chunk_points"] == 2


def test_cli_prints_the_summary_and_writes_every_point(tmp_path, capsys):
    import argparse
    import json

    from cosmos_policy_ros.learning.planning_diagnostics import (
        add_planning_diagnostics_arguments,
        run_planning_diagnostics,
    )

    parser = argparse.ArgumentParser()
    add_planning_diagnostics_arguments(parser)
    out = tmp_path / "diag.json"
    common = ["--checkpoint", str(shipped_checkpoint("aloha_sim_transfer_cube")), "--episodes", "1",
              "--episode-length", "0.9", "--future-samples", "1", "--value-samples", "1"]
    assert run_planning_diagnostics(parser.parse_args([*common, "--candidates", "2", "--out", str(out)])) == 0
    printed = capsys.readouterr().out
    assert "1 chunk points in 1 episodes" in printed and "control (N copies of candidate 0)" in printed
    report = json.loads(out.read_text())
    assert len(report["points"]) == 1 and report["settings"]["planning_checkpoint"] == "(policy)"
    own = report["points"][0]["candidate_pair_l1"]
    noisy = tmp_path / "noisy.json"
    assert run_planning_diagnostics(parser.parse_args([*common, "--candidates", "2", "--candidate-noise", "0.1",
                                                       "--out", str(noisy)])) == 0
    # candidate 1 moved by ~0.1 rad per arm joint: far apart from candidate 0 now
    assert json.loads(noisy.read_text())["points"][0]["candidate_pair_l1"] > own + 0.03
    assert run_planning_diagnostics(parser.parse_args([*common, "--candidates", "1"])) == 2
    assert run_planning_diagnostics(parser.parse_args([*common, "--checkpoint", str(tmp_path / "none")])) == 2
