"""Released checkpoints by hub id: resolved from a local Hugging Face cache laid out like
the hub repos (HF_HUB_OFFLINE=1, nothing downloads), converted once, atomically; bad
input names the repo, the file and what to do."""
import json
import pickle
import shutil

import pytest
import torch

import huggingface_hub
from huggingface_hub import constants as hf_constants
from huggingface_hub import errors as hf_errors

from cosmos_policy_ros.cli import main as cli_main
from cosmos_policy_ros.config import ConfigError, load_config
from cosmos_policy_ros.control.policies import make_policy
from cosmos_policy_ros.model import convert as convert_module
from cosmos_policy_ros.model import hub
from cosmos_policy_ros.model.checkpoint import CosmosCheckpoint, shipped_checkpoint
from cosmos_policy_ros.model.tiny import TINY_TRANSFORMER_CONFIG, tiny_stats
from test_model_convert import native_state_dict

TINY = {"transformer_config": TINY_TRANSFORMER_CONFIG, "dtype": torch.float32}
TASK = "transfer the cube"


def put_repo(cache, repo_id, files):
    """The huggingface_hub cache layout: models--org--name/{refs/main, snapshots/<commit>/...}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "c0ffee" + "0" * 34
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    for name, write in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        write(snapshot / name)
    return snapshot


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """The three releases' files in an offline HF cache; our cache under tmp_path."""
    cache = tmp_path / "hf"
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("COSMOS_POLICY_ROS_CACHE", str(tmp_path / "ours"))

    def t5(path):
        path.write_bytes(pickle.dumps({TASK: torch.randn(1, 7, TINY_TRANSFORMER_CONFIG["text_embed_dim"])}))

    put_repo(cache, hub.POLICY_REPO, {
        "Cosmos-Policy-ALOHA-Predict2-2B.pt": lambda p: torch.save(native_state_dict(seed=0), p),
        "aloha_dataset_statistics.json": lambda p: tiny_stats().save(p),
        "aloha_t5_embeddings.pkl": t5,
    })
    put_repo(cache, hub.PLANNING_REPO, {
        "some-planning-weights.pt": lambda p: torch.save({"model": native_state_dict(seed=1)}, p),
    })
    vae = shipped_checkpoint("tiny_cosmos") / "vae"
    put_repo(cache, hub.VAE_REPO, {name: (lambda p, n=name: shutil.copy(vae / n.split("/")[1], p))
                                   for name in hub.VAE_FILES})
    return cache


def test_policy_release_converts_once_into_a_self_contained_cache_folder(hf_cache, monkeypatch):
    folder = hub.resolve_checkpoint(hub.POLICY_REPO, **TINY)
    assert folder.parent.parent == hub.cache_root() and folder.name == "nvidia--Cosmos-Policy-ALOHA-Predict2-2B"
    source = json.loads((folder / hub.HUB_SOURCE_FILE).read_text())
    assert source["repo_id"] == hub.POLICY_REPO and source["weights"].endswith("Cosmos-Policy-ALOHA-Predict2-2B.pt")
    assert json.loads((folder / "cosmos_policy.json").read_text())["vae"] == {"subfolder": "vae"}
    loaded = CosmosCheckpoint.from_pretrained(folder)  # VAE bundled: no reference into the HF cache
    assert TASK in loaded.text_embeddings and loaded.vae is not None
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no partial folder left

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(hub, "convert_release", no_second_conversion)
    assert hub.resolve_checkpoint(hub.POLICY_REPO, **TINY) == folder


def test_planning_release_takes_the_repos_pt_and_the_policy_repos_stats(hf_cache):
    folder = hub.cached_checkpoint(hub.PLANNING_REPO, **TINY)
    source = json.loads((folder / hub.HUB_SOURCE_FILE).read_text())
    assert source["weights"].endswith("some-planning-weights.pt") and source["planning"] is True
    assert source["dataset_statistics"] == f"{hub.POLICY_REPO}/aloha_dataset_statistics.json"
    layout = json.loads((folder / "cosmos_policy.json").read_text())["layout"]
    assert "proprio" not in layout["conditions"]["value"]  # V(s'): current state masked in value mode


def test_cli_converts_a_hub_id(hf_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(convert_module, "PREDICT2_2B_TRANSFORMER_CONFIG", TINY_TRANSFORMER_CONFIG)
    out = tmp_path / "out"
    assert cli_main(["convert-checkpoint", hub.POLICY_REPO, str(out)]) == 0
    assert (out / "transformer" / "config.json").is_file() and (out / "vae" / "config.json").is_file()
    assert cli_main(["convert-checkpoint", hub.POLICY_REPO, str(out)]) == 2  # never overwrite
    assert "not empty" in capsys.readouterr().out


def test_missing_file_names_repo_file_and_what_to_do(hf_cache):
    for path in hf_cache.glob("models--nvidia--Cosmos-Policy-ALOHA-Predict2-2B/snapshots/*/aloha_t5_embeddings.pkl"):
        path.unlink()
    with pytest.raises(hub.HubError) as err:
        hub.cached_checkpoint(hub.POLICY_REPO, **TINY)
    message = str(err.value)
    assert hub.POLICY_REPO in message and "aloha_t5_embeddings.pkl" in message
    assert "HF_HUB_OFFLINE" in message and "hf download" in message
    assert not any((hub.cache_root() / "checkpoints").iterdir())  # nothing half written stays


def test_unknown_hub_id_and_no_network(hf_cache, monkeypatch):
    with pytest.raises(hub.HubError, match="nvidia/Cosmos-Policy-Nope.*not a known Cosmos Policy release"):
        hub.resolve_checkpoint("nvidia/Cosmos-Policy-Nope")
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def unreachable(**kwargs):
        raise hf_errors.LocalEntryNotFoundError("cannot reach the hub and not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(hub.HubError, match="Cosmos-Policy-ALOHA-Predict2-2B.pt.*hub cannot be reached"):
        hub.cached_checkpoint(hub.POLICY_REPO, **TINY)


def test_half_written_cache_is_refused_with_what_to_do(hf_cache):
    final = hub.cache_root() / "checkpoints" / "nvidia--Cosmos-Policy-ALOHA-Predict2-2B"
    final.mkdir(parents=True)
    (final / "cosmos_policy.json").write_text("{}")
    with pytest.raises(hub.HubError, match="incomplete.*delete the folder"):
        hub.resolve_checkpoint(hub.POLICY_REPO, **TINY)


def test_conversion_failure_leaves_no_cache_folder(hf_cache):
    for path in hf_cache.glob("models--nvidia--Cosmos-Policy-ALOHA-Predict2-2B/snapshots/*/*.pt"):
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(convert_module.ConversionError):
        hub.cached_checkpoint(hub.POLICY_REPO, **TINY)
    assert not any((hub.cache_root() / "checkpoints").iterdir())


def test_policy_setting_with_an_unknown_hub_id_is_a_config_error(hf_cache):
    config = load_config("aloha", {"policy.type": "cosmos", "policy.checkpoint": "someone/not-a-release"})
    with pytest.raises(ConfigError, match="someone/not-a-release.*not a known"):
        make_policy(config)
    with pytest.raises(ConfigError, match="policy.compile.*'sometimes'"):
        load_config("aloha", {"policy.type": "cosmos", "policy.checkpoint": str(shipped_checkpoint("tiny_cosmos")),
                              "policy.compile": "sometimes"})
