"""Conversion of the official Cosmos Policy checkpoints to a checkpoint folder.

Input: the released ``.pt`` (a state dict with native ``net.`` / ``net_ema.`` key
prefixes, possibly wrapped under ``"model"``, ``"state_dict"``, ...) or a torch
distributed-checkpoint folder, plus ``<suite>_dataset_statistics.json`` and
``<suite>_t5_embeddings.pkl``. Output: the folder ``CosmosCheckpoint.from_pretrained``
reads, with the transformer under diffusers' names.

Native -> diffusers renaming is the one diffusers' own single-file loader applies to
Cosmos-Predict2 (``x_embedder.proj.1`` -> ``patch_embed.proj``, ``blocks.N.self_attn.q_proj``
-> ``transformer_blocks.N.attn1.to_q``, adaLN modulation -> ``norm{1,2,3}.linear_{1,2}``,
``final_layer.linear`` -> ``proj_out``, ...); ``pos_embedder.*``, ``accum_*`` and
``_extra_state`` entries carry no weights and are dropped. Every key that maps nowhere
and every model weight left unfilled is reported; shape mismatches refuse the conversion.
"""
from __future__ import annotations

import argparse
import io
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .checkpoint import (
    ALOHA_JOINT_NAMES,
    PREDICT2_2B_TRANSFORMER_CONFIG,
    VAE_DIR,
    WAN21_VAE_REPO,
    CosmosCheckpoint,
    PolicyConfig,
    load_diffusers_model,
)
from .layout import aloha_layout
from .normalization import NormalizationStats
from .sampler import SamplerConfig

# Ordered substring renames (applied in this order to every key), as in diffusers.
NATIVE_TO_DIFFUSERS: tuple[tuple[str, str], ...] = (
    ("t_embedder.1", "time_embed.t_embedder"),
    ("t_embedding_norm", "time_embed.norm"),
    ("blocks", "transformer_blocks"),
    ("adaln_modulation_self_attn.1", "norm1.linear_1"),
    ("adaln_modulation_self_attn.2", "norm1.linear_2"),
    ("adaln_modulation_cross_attn.1", "norm2.linear_1"),
    ("adaln_modulation_cross_attn.2", "norm2.linear_2"),
    ("adaln_modulation_mlp.1", "norm3.linear_1"),
    ("adaln_modulation_mlp.2", "norm3.linear_2"),
    ("self_attn", "attn1"),
    ("cross_attn", "attn2"),
    ("q_proj", "to_q"),
    ("k_proj", "to_k"),
    ("v_proj", "to_v"),
    ("output_proj", "to_out.0"),
    ("q_norm", "norm_q"),
    ("k_norm", "norm_k"),
    ("mlp.layer1", "ff.net.0.proj"),
    ("mlp.layer2", "ff.net.2"),
    ("x_embedder.proj.1", "patch_embed.proj"),
    ("final_layer.adaln_modulation.1", "norm_out.linear_1"),
    ("final_layer.adaln_modulation.2", "norm_out.linear_2"),
    ("final_layer.linear", "proj_out"),
)
DROPPED_MARKERS = ("pos_embedder.", "accum_", "_extra_state")
WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "module", "net")


class ConversionError(ValueError):
    """The source checkpoint cannot be converted (the message says why and what was expected)."""


@dataclass
class ConversionReport:
    prefix: str
    mapped: int = 0
    dropped: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    shape_mismatches: list[str] = field(default_factory=list)
    ignored_prefixes: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"source prefix {self.prefix!r}: {self.mapped} tensors mapped, {len(self.dropped)} dropped"]
        for prefix, count in self.ignored_prefixes.items():
            out.append(f"ignored {count} keys under {prefix!r}")
        out += [f"unmapped source key: {key}" for key in self.unmapped]
        out += [f"missing model weight: {key}" for key in self.missing]
        out += [f"shape mismatch: {line}" for line in self.shape_mismatches]
        return out


def rename_native_key(key: str) -> str | None:
    """Native (prefix-free) key -> diffusers key, or None for keys without weights."""
    if any(marker in key for marker in DROPPED_MARKERS):
        return None
    for old, new in NATIVE_TO_DIFFUSERS:
        key = key.replace(old, new)
    return key


# ------------------------------------------------------------------ reading the source
def _find_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The dict of tensors holding ``net.`` / ``net_ema.`` keys, unwrapping containers."""
    if isinstance(obj, dict):
        keys = [k for k in obj if isinstance(k, str)]
        if any(k.startswith(("net.", "net_ema.")) for k in keys) or any(k.startswith("x_embedder.") for k in keys):
            return obj
        for wrapper in WRAPPER_KEYS:
            if wrapper in obj and isinstance(obj[wrapper], dict):
                return _find_state_dict(obj[wrapper], source)
    raise ConversionError(
        f"{source}: no Cosmos network weights found (expected keys starting with 'net.' or 'net_ema.', "
        f"possibly under one of {WRAPPER_KEYS})"
    )


def _load_dcp_folder(folder: Path) -> dict[str, Any]:
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    if not (folder / ".metadata").is_file() and (folder / "model" / ".metadata").is_file():
        folder = folder / "model"
    if not (folder / ".metadata").is_file():
        raise ConversionError(f"{folder}: not a torch distributed checkpoint (no .metadata file)")
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "state.pt"
        dcp_to_torch_save(str(folder), str(target))
        return torch.load(target, map_location="cpu", weights_only=True)


def load_native_state_dict(src: str | Path) -> dict[str, torch.Tensor]:
    """Read an official ``.pt`` file or distributed-checkpoint folder (CPU tensors)."""
    src = Path(src)
    if src.is_dir():
        obj = _load_dcp_folder(src)
    elif src.is_file():
        try:
            obj = torch.load(src, map_location="cpu", weights_only=True, mmap=True)
        except (RuntimeError, pickle.UnpicklingError) as err:
            raise ConversionError(f"{src}: cannot read as a torch checkpoint ({err})") from err
    else:
        raise FileNotFoundError(f"{src}: checkpoint not found")
    return _find_state_dict(obj, str(src))


def select_network(state: dict[str, torch.Tensor], use_ema: bool) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Keep one network's weights (``net.`` or ``net_ema.``) with the prefix removed."""
    prefix = "net_ema." if use_ema else "net."
    if not any(k.startswith(("net.", "net_ema.")) for k in state):
        prefix = ""  # already prefix-free
    report = ConversionReport(prefix=prefix)
    selected: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(prefix):
            selected[key[len(prefix):]] = value
        else:
            head = key.split(".", 1)[0] + "."
            report.ignored_prefixes[head] = report.ignored_prefixes.get(head, 0) + 1
    if not selected:
        raise ConversionError(f"no keys with prefix {prefix!r} (use_ema={use_ema}); found prefixes {report.ignored_prefixes}")
    return selected, report


def map_to_model(
    native: dict[str, torch.Tensor], model: torch.nn.Module, report: ConversionReport, progress: bool = True
) -> dict[str, torch.Tensor]:
    """Rename native keys onto ``model``'s state-dict keys; fill the report (no raising)."""
    expected = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    for key in tqdm(sorted(native), desc="mapping weights", disable=not progress, unit="tensor"):
        new_key = rename_native_key(key)
        if new_key is None:
            report.dropped.append(key)
            continue
        if new_key not in expected:
            report.unmapped.append(f"{key} -> {new_key}")
            continue
        value = native[key]
        if tuple(value.shape) != tuple(expected[new_key].shape):
            report.shape_mismatches.append(
                f"{key} -> {new_key}: source {tuple(value.shape)}, model expects {tuple(expected[new_key].shape)}"
            )
            continue
        converted[new_key] = value
        report.mapped += 1
    mismatched = {line.split(" -> ", 1)[1].split(":", 1)[0] for line in report.shape_mismatches}
    report.missing = sorted(set(expected) - set(converted) - mismatched)
    return converted


def convert_transformer(
    native: dict[str, torch.Tensor],
    transformer_config: dict[str, Any] | None = None,
    use_ema: bool = False,
    dtype: torch.dtype = torch.bfloat16,
    progress: bool = True,
    allow_unmapped: bool = False,
) -> tuple[torch.nn.Module, ConversionReport]:
    """Native state dict -> diffusers ``CosmosTransformer3DModel`` (weights assigned, no copy)."""
    from diffusers import CosmosTransformer3DModel

    selected, report = select_network(native, use_ema)
    with torch.device("meta"):
        model = CosmosTransformer3DModel(**(transformer_config or PREDICT2_2B_TRANSFORMER_CONFIG))
    converted = map_to_model(selected, model, report, progress)
    problems = report.shape_mismatches or report.missing or (report.unmapped and not allow_unmapped)
    if problems:
        raise ConversionError("refusing to convert:\n  " + "\n  ".join(report.lines()))
    converted = {k: v.to(dtype) if v.is_floating_point() else v for k, v in converted.items()}
    model.load_state_dict(converted, strict=True, assign=True)
    return model.eval(), report


# ------------------------------------------------------------------ T5 pickle
class _TensorUnpickler(pickle.Unpickler):
    """Unpickle only tensors, numpy arrays and plain containers (the embedding pickle)."""

    ALLOWED_MODULES = ("torch", "numpy", "collections", "_codecs")

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] in self.ALLOWED_MODULES or (module == "builtins" and name in ("dict", "list", "tuple", "set", "frozenset", "bytearray")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} (only tensors and arrays expected)")


def load_t5_pickle(path: str | Path) -> dict[str, torch.Tensor]:
    """``{task: [1, L, D] or [L, D]}`` pickle -> ``{task: [L, D]}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: T5 embeddings pickle not found")
    try:
        data = _TensorUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError) as err:
        raise ConversionError(f"{path}: cannot read the T5 embeddings pickle ({err})") from err
    if not isinstance(data, dict) or not data:
        raise ConversionError(f"{path}: expected a non-empty dict task string -> embedding")
    table: dict[str, torch.Tensor] = {}
    for task, emb in data.items():
        emb = torch.as_tensor(emb)
        if emb.ndim == 3 and emb.shape[0] == 1:
            emb = emb[0]
        if emb.ndim != 2:
            raise ConversionError(f"{path}: embedding of task {task!r} has shape {tuple(emb.shape)}, expected [1, L, D] or [L, D]")
        table[str(task)] = emb.contiguous()
    return table


# ------------------------------------------------------------------ whole checkpoint
# The official ALOHA client resizes every camera frame to 256x256 (as the training data was
# stored) before the 224 model size; its deployment samples with seed 195.
ALOHA_STORED_IMAGE_SIZE = 256
ALOHA_DEPLOY_SEED = 195


def convert_checkpoint(
    src: str | Path,
    stats_json: str | Path,
    t5_pickle: str | Path,
    out_dir: str | Path,
    *,
    planning: bool = False,
    use_ema: bool = False,
    vae: str = WAN21_VAE_REPO,
    vae_subfolder: str | None = "vae",
    chunk_size: int = 50,
    control_rate_hz: float = 25.0,
    num_steps: dict[str, int] | None = None,
    jpeg_quality: int | None = None,
    transformer_config: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.bfloat16,
    progress: bool = True,
    allow_unmapped: bool = False,
    bundle_vae: bool = False,
) -> ConversionReport:
    """Official ALOHA checkpoint -> checkpoint folder ``out_dir``; returns the key report.

    ``planning``: the planning model (V(s') value head: value mode conditions on the
    future state only). ``vae``: Wan2.1 VAE repo id or local diffusers folder.
    ``bundle_vae``: copy the VAE (a local folder) into ``out_dir/vae`` instead of
    referencing it, so the folder is self-contained.
    """
    stats = NormalizationStats.load(stats_json)
    table = load_t5_pickle(t5_pickle)
    native = load_native_state_dict(src)
    transformer, report = convert_transformer(
        native, transformer_config, use_ema=use_ema, dtype=dtype, progress=progress, allow_unmapped=allow_unmapped
    )
    vae_ref: dict[str, Any] = {"pretrained_model_name_or_path": str(vae)}
    if vae_subfolder:
        vae_ref["subfolder"] = vae_subfolder
    vae_module = None
    if bundle_vae:
        from diffusers import AutoencoderKLWan

        vae_folder = Path(vae) / (vae_subfolder or "")
        if not vae_folder.is_dir():
            raise ConversionError(f"{vae_folder}: VAE folder not found (bundle_vae needs a local diffusers folder)")
        vae_module = load_diffusers_model(AutoencoderKLWan, vae_folder, "cpu", torch.float32)
        vae_ref = {"subfolder": VAE_DIR}
    config = PolicyConfig(
        robot="aloha",
        joint_names=ALOHA_JOINT_NAMES,
        chunk_size=chunk_size,
        control_rate_hz=control_rate_hz,
        layout=aloha_layout(value_from_future_state_only=planning),
        sampler=SamplerConfig(sigma_min=4.0, sigma_max=80.0, rho=7.0, sigma_conditional=0.0),
        num_steps=num_steps or {"policy": 10, "world_model": 5, "value": 5},
        image_size=224,
        center_crop_area=0.9,
        jpeg_quality=jpeg_quality,
        stored_image_size=ALOHA_STORED_IMAGE_SIZE,
        seed=ALOHA_DEPLOY_SEED,
        vae=vae_ref,
        default_task=next(iter(table)),
    )
    checkpoint = CosmosCheckpoint(config=config, transformer=transformer, vae=vae_module, stats=stats,
                                  text_embeddings=table)
    checkpoint.validate(str(src))
    checkpoint.save_pretrained(out_dir)
    return report


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="SRC STATS_JSON T5_PICKLE OUT_DIR | HUB_ID OUT_DIR",
                        help="official .pt file or distributed-checkpoint folder, aloha_dataset_statistics.json, "
                             "aloha_t5_embeddings.pkl and the folder to write; or a released hub id "
                             "(nvidia/Cosmos-Policy-ALOHA-Predict2-2B, nvidia/Cosmos-Policy-ALOHA-Planning-Model-"
                             "Predict2-2B) and the folder to write (files fetched with huggingface_hub)")
    parser.add_argument("--planning", action="store_true", help="planning model (V(s') value function)")
    parser.add_argument("--use-ema", action="store_true", help="take net_ema.* weights instead of net.*")
    parser.add_argument("--vae", default=WAN21_VAE_REPO, help=f"Wan2.1 VAE repo id or folder (default {WAN21_VAE_REPO})")
    parser.add_argument("--vae-subfolder", default="vae", help="subfolder of --vae holding the VAE ('' for none)")
    parser.add_argument("--jpeg-quality", type=int, default=None, help="JPEG round trip quality if trained with it")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16", help="stored weight dtype")
    parser.add_argument("--allow-unmapped", action="store_true", help="convert even if some source keys map nowhere")


def run_convert(args: argparse.Namespace) -> int:
    if len(args.paths) == 2:
        return _run_convert_hub(args)
    if len(args.paths) != 4:
        print(f"convert-checkpoint: expected SRC STATS_JSON T5_PICKLE OUT_DIR or HUB_ID OUT_DIR, got {args.paths}")
        return 2
    args.src, args.stats_json, args.t5_pickle, args.out_dir = args.paths
    try:
        report = convert_checkpoint(
            args.src, args.stats_json, args.t5_pickle, args.out_dir,
            planning=args.planning, use_ema=args.use_ema, vae=args.vae, vae_subfolder=args.vae_subfolder or None,
            jpeg_quality=args.jpeg_quality, dtype=getattr(torch, args.dtype), allow_unmapped=args.allow_unmapped,
        )
    except ConversionError as err:
        print(f"convert-checkpoint: {err}")
        return 1
    for line in report.lines():
        print(line)
    print(f"wrote {args.out_dir}")
    return 0


def _run_convert_hub(args: argparse.Namespace) -> int:
    from .hub import HubError, convert_release

    repo_id, out_dir = args.paths
    if Path(out_dir).exists() and any(Path(out_dir).iterdir()):
        print(f"convert-checkpoint: {out_dir} exists and is not empty; choose a new folder")
        return 2
    try:
        convert_release(repo_id, out_dir, use_ema=args.use_ema, jpeg_quality=args.jpeg_quality,
                        dtype=getattr(torch, args.dtype), allow_unmapped=args.allow_unmapped)
    except (HubError, ConversionError) as err:
        print(f"convert-checkpoint: {err}")
        return 1
    print(f"wrote {out_dir} from hub repo {repo_id}")
    return 0
