"""Released Cosmos Policy checkpoints by Hugging Face hub id, converted once into a cache.

``resolve_checkpoint(text)`` turns a ``checkpoint:`` setting into a checkpoint folder:
an existing folder is returned as is; a known hub id (``HUB_RELEASES``) is downloaded
with huggingface_hub (its own cache, ``HF_HOME``; ``HF_HUB_OFFLINE=1`` uses only that
cache), converted with ``convert.convert_checkpoint`` into a temporary folder under
``<cache_root>/checkpoints`` and renamed into place, so a cache folder is complete or
absent. ``HUB_SOURCE_FILE`` is written last and records where the files came from.

Files, as the official deploy script names them (NVlabs/cosmos-policy,
``experiments/robot/aloha/deploy.py`` and the ALOHA experiment config):

- policy ``nvidia/Cosmos-Policy-ALOHA-Predict2-2B``: ``Cosmos-Policy-ALOHA-Predict2-2B.pt``,
  ``aloha_dataset_statistics.json``, ``aloha_t5_embeddings.pkl``;
- planning model ``nvidia/Cosmos-Policy-ALOHA-Planning-Model-Predict2-2B``: its weights are
  found the way the official loader does (a ``model/`` distributed checkpoint, else the
  repo's ``.pt`` file); statistics and T5 embeddings come from the policy repo (the
  official deploy passes the policy repo's files for both models);
- the Wan2.1 VAE in diffusers format (``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``, ``vae/``; the
  official code loads the same VAE as ``tokenizer.pth`` from Cosmos-Predict2), copied into
  the converted folder so it is self-contained.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POLICY_REPO = "nvidia/Cosmos-Policy-ALOHA-Predict2-2B"
PLANNING_REPO = "nvidia/Cosmos-Policy-ALOHA-Planning-Model-Predict2-2B"
VAE_REPO = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
VAE_FILES = ("vae/config.json", "vae/diffusion_pytorch_model.safetensors")
HUB_SOURCE_FILE = "hub_source.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class HubError(RuntimeError):
    """A hub checkpoint cannot be resolved; the message names the repo, the file and what to do."""


@dataclass(frozen=True)
class HubRelease:
    """One released checkpoint: where its files are on the hub."""

    repo_id: str
    weights: str | None  # file in repo_id; None: the repo's model/ folder or its one .pt file
    planning: bool
    stats: tuple[str, str] = (POLICY_REPO, "aloha_dataset_statistics.json")
    t5: tuple[str, str] = (POLICY_REPO, "aloha_t5_embeddings.pkl")


HUB_RELEASES = {
    POLICY_REPO: HubRelease(POLICY_REPO, "Cosmos-Policy-ALOHA-Predict2-2B.pt", planning=False),
    PLANNING_REPO: HubRelease(PLANNING_REPO, None, planning=True),
}


def cache_root() -> Path:
    """``COSMOS_POLICY_ROS_CACHE``, default ``~/.cache/cosmos_policy_ros`` (checkpoints, inductor)."""
    return Path(os.environ.get("COSMOS_POLICY_ROS_CACHE") or Path.home() / ".cache" / "cosmos_policy_ros")


def looks_like_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and not Path(text).exists()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_error(repo_id: str, filename: str, err: Exception) -> HubError:
    from huggingface_hub import errors

    where = f"hub repo {repo_id!r}, file {filename!r}"
    if isinstance(err, errors.GatedRepoError):
        return HubError(f"{where}: the repo is gated; accept its license on huggingface.co and log in "
                        f"(`hf auth login` or HF_TOKEN), then retry")
    if isinstance(err, errors.RepositoryNotFoundError):
        return HubError(f"{where}: the repo does not exist or is private; check the id (known releases: "
                        f"{sorted(HUB_RELEASES)}) or log in if it is private")
    if isinstance(err, errors.RevisionNotFoundError):
        return HubError(f"{where}: revision not found; use the default branch")
    if isinstance(err, errors.RemoteEntryNotFoundError):
        return HubError(f"{where}: the repo has no such file; the release layout may have changed: convert "
                        "manually with `cosmos-policy-ros convert-checkpoint SRC.pt STATS.json T5.pkl OUT`")
    if isinstance(err, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled, ConnectionError, OSError)):
        mode = "HF_HUB_OFFLINE=1 is set" if _offline() else "the hub cannot be reached"
        return HubError(f"{where}: not in the local Hugging Face cache and {mode} ({type(err).__name__}); "
                        f"run `hf download {repo_id} {filename}` where there is network (same HF_HOME), "
                        "or unset HF_HUB_OFFLINE")
    return HubError(f"{where}: {type(err).__name__}: {err}")


def download_file(repo_id: str, filename: str) -> Path:
    """One file of a hub repo, from the huggingface_hub cache or downloaded into it."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, local_files_only=_offline()))
    except Exception as err:  # noqa: BLE001 - every failure becomes one actionable message
        raise _hub_error(repo_id, filename, err) from err


def _repo_weights(repo_id: str) -> Path:
    """The official loader's rule: a ``model/`` distributed checkpoint, else the repo's ``.pt``."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id=repo_id, allow_patterns=["*.pt", "model/*"],
                                        local_files_only=_offline()))
    except Exception as err:  # noqa: BLE001
        raise _hub_error(repo_id, "*.pt or model/", err) from err
    if (folder / "model" / ".metadata").is_file():
        return folder / "model"
    weights = sorted(folder.glob("*.pt"))
    if len(weights) != 1:
        raise HubError(f"hub repo {repo_id!r}, file '*.pt': expected one .pt file or a model/ folder, found "
                       f"{[p.name for p in weights]}; convert manually with `cosmos-policy-ros convert-checkpoint`")
    return weights[0]


def release(repo_id: str) -> HubRelease:
    if repo_id not in HUB_RELEASES:
        raise HubError(f"hub id {repo_id!r} is not a known Cosmos Policy release (known: {sorted(HUB_RELEASES)}); "
                       "for another checkpoint download its files and run `cosmos-policy-ros convert-checkpoint "
                       "SRC.pt STATS.json T5.pkl OUT`")
    return HUB_RELEASES[repo_id]


def convert_release(repo_id: str, out_dir: str | Path, progress: bool = True, **convert_kwargs: Any) -> Path:
    """Resolve a release's files and convert them into ``out_dir`` (not atomic; see ``cached_checkpoint``)."""
    from .convert import convert_checkpoint

    rel = release(repo_id)
    weights = download_file(repo_id, rel.weights) if rel.weights else _repo_weights(repo_id)
    stats = download_file(*rel.stats)
    t5 = download_file(*rel.t5)
    vae_files = [download_file(VAE_REPO, name) for name in VAE_FILES]
    vae_root = vae_files[0].parents[1]  # <snapshot>/vae/config.json -> <snapshot>
    convert_checkpoint(weights, stats, t5, out_dir, planning=rel.planning, vae=str(vae_root), vae_subfolder="vae",
                       bundle_vae=True, progress=progress, **convert_kwargs)
    source = {"repo_id": repo_id, "weights": str(weights), "dataset_statistics": f"{rel.stats[0]}/{rel.stats[1]}",
              "t5_embeddings": f"{rel.t5[0]}/{rel.t5[1]}", "vae": f"{VAE_REPO}/vae", "planning": rel.planning}
    (Path(out_dir) / HUB_SOURCE_FILE).write_text(json.dumps(source, indent=2))
    return Path(out_dir)


def cached_checkpoint(repo_id: str, progress: bool = False, **convert_kwargs: Any) -> Path:
    """The converted folder of a release in ``<cache_root>/checkpoints``, converting it once."""
    release(repo_id)
    root = cache_root() / "checkpoints"
    final = root / repo_id.replace("/", "--")
    if final.exists():
        if (final / HUB_SOURCE_FILE).is_file():
            return final
        raise HubError(f"{final}: the converted cache of hub repo {repo_id!r} is incomplete (no {HUB_SOURCE_FILE}, "
                       "written last); delete the folder and start again to convert it anew")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=root))
    try:
        convert_release(repo_id, tmp, progress=progress, **convert_kwargs)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / HUB_SOURCE_FILE).is_file():  # not another process finishing first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def resolve_checkpoint(text: str | Path, **convert_kwargs: Any) -> Path:
    """A ``checkpoint:`` setting -> folder: an existing path as is, a hub id via the cache."""
    text = str(text)
    if Path(text).exists() or not looks_like_hub_id(text):
        return Path(text)
    return cached_checkpoint(text, **convert_kwargs)
