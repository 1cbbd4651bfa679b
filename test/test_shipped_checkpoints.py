"""The tiny checkpoints the package ships are exactly what `make-tiny-checkpoint` builds."""
import pytest
import torch
from safetensors.torch import load_file

from cosmos_policy_ros.model.tiny import build_tiny_checkpoint
from cosmos_policy_ros.control.policies import default_checkpoint

SHIPPED = default_checkpoint().parent


@pytest.mark.parametrize("name, planning", [("tiny_cosmos", False), ("tiny_cosmos_planning", True)])
def test_shipped_tiny_checkpoint_is_reproducible(tmp_path, name, planning):
    rebuilt = tmp_path / name
    build_tiny_checkpoint(rebuilt, seed=0, **({"planning": True} if planning else {}))
    for weights in sorted((SHIPPED / name).rglob("*.safetensors")):
        ours = load_file(rebuilt / weights.relative_to(SHIPPED / name))
        theirs = load_file(weights)
        assert ours.keys() == theirs.keys()
        for key in theirs:
            torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)
    assert (rebuilt / "cosmos_policy.json").read_text() == (SHIPPED / name / "cosmos_policy.json").read_text()
