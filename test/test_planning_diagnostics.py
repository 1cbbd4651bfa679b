"""planning-diagnostics: the plain policy drives (candidate 0), every chunk's candidates are
scored, and N copies of candidate 0 give the seed-only control."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmos_policy_ros.control.planning import ModelPlanner
from cosmos_policy_ros.learning.offline_eval import closed_loop
from cosmos_policy_ros.learning.planning_diagnostics import auroc, diagnose, summarize
from cosmos_policy_ros.model.checkpoint import shipped_checkpoint
from cosmos_policy_ros.model.cosmos_policy import CosmosPolicy


def test_auroc_counts_ties_half_and_needs_both_classes():
    assert auroc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert auroc([0.2, 0.9], [True, False]) == 0.0
    assert auroc([0.2, 0.9], [True, True]) is None


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
