"""The self-describing checkpoint folder: everything needed to run a Cosmos Policy.

Folder layout::

    cosmos_policy.json          robot, joint/camera names, chunk size, control rate,
                                image preprocessing, latent layout, sampler schedule,
                                denoising steps per mode, VAE reference
    transformer/                diffusers CosmosTransformer3DModel (config.json + safetensors)
    vae/                        AutoencoderKLWan weights (tiny models), or absent when
                                cosmos_policy.json names a Wan2.1 VAE folder / repo id
    dataset_statistics.json     official <suite>_dataset_statistics.json format
    t5_embeddings.safetensors   task instruction -> T5 embedding [L, D] (no T5 at run time)

Errors name the file, the field and what was expected.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .layout import MODES, LatentLayout
from .normalization import NormalizationStats
from .preprocessing import validate_crop_box
from .sampler import SamplerConfig

FORMAT_VERSION = 1
CONFIG_FILE = "cosmos_policy.json"
STATS_FILE = "dataset_statistics.json"
T5_FILE = "t5_embeddings.safetensors"
TRANSFORMER_DIR = "transformer"
VAE_DIR = "vae"
# Checkpoint folders shipped inside the package (package data, not a Python package).
SHIPPED_CHECKPOINTS_DIR = Path(__file__).resolve().parents[1] / "checkpoints"
WAN21_VAE_REPO = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"

ALOHA_JOINT_NAMES = (
    "left_waist", "left_shoulder", "left_elbow", "left_forearm_roll", "left_wrist_angle",
    "left_wrist_rotate", "left_gripper",
    "right_waist", "right_shoulder", "right_elbow", "right_forearm_roll", "right_wrist_angle",
    "right_wrist_rotate", "right_gripper",
)

# Cosmos-Predict2-2B Video2World, as diffusers' CosmosTransformer3DModel (~1.96 B parameters).
PREDICT2_2B_TRANSFORMER_CONFIG: dict[str, Any] = dict(
    in_channels=17,  # 16 latent channels + condition mask; the padding mask adds one more
    out_channels=16,
    num_attention_heads=16,
    attention_head_dim=128,
    num_layers=28,
    mlp_ratio=4.0,
    text_embed_dim=1024,
    adaln_lora_dim=256,
    max_size=(128, 240, 240),
    patch_size=(1, 2, 2),
    rope_scale=(1.0, 3.0, 3.0),
    concat_padding_mask=True,
    extra_pos_embed_type=None,
)


class CheckpointError(ValueError):
    """A checkpoint folder or one of its files is malformed."""


@dataclass(frozen=True)
class PolicyConfig:
    """Contents of ``cosmos_policy.json``."""

    robot: str
    joint_names: tuple[str, ...]
    chunk_size: int
    control_rate_hz: float
    layout: LatentLayout
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    num_steps: dict[str, int] = field(default_factory=lambda: {"policy": 10, "world_model": 5, "value": 5})
    image_size: int = 224
    center_crop_area: float | None = 0.9  # test-time crop matching train-time 90%-area crops
    jpeg_quality: int | None = None  # JPEG round trip before the model (when trained with it)
    # Square size the training frames were stored at: camera frames are resized to it first
    # (official ALOHA: 256), then to image_size. None: straight to image_size.
    stored_image_size: int | None = None
    # Region of the camera frame the model sees, (top, left, height, width) as fractions of
    # the frame, cut before any resize; None: the whole frame. The embedded sim model uses it:
    # at 64 px the whole frame leaves the cube ~2 px wide.
    crop_box: tuple[float, float, float, float] | None = None
    seed: int = 0  # sampling seed when the deployment names none (official ALOHA deploy: 195)
    vae: dict[str, Any] = field(default_factory=lambda: {"subfolder": VAE_DIR})
    default_task: str = ""

    @property
    def camera_names(self) -> tuple[str, ...]:
        return self.layout.cameras

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "robot": self.robot,
            "joint_names": list(self.joint_names),
            "camera_names": list(self.camera_names),
            "chunk_size": self.chunk_size,
            "control_rate_hz": self.control_rate_hz,
            "image_size": self.image_size,
            "center_crop_area": self.center_crop_area,
            "jpeg_quality": self.jpeg_quality,
            "stored_image_size": self.stored_image_size,
            "crop_box": None if self.crop_box is None else list(self.crop_box),
            "seed": self.seed,
            "layout": self.layout.to_dict(),
            "sampler": self.sampler.to_dict(),
            "num_steps": dict(self.num_steps),
            "vae": dict(self.vae),
            "default_task": self.default_task,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = CONFIG_FILE) -> "PolicyConfig":
        if not isinstance(data, dict):
            raise CheckpointError(f"{source}: expected a JSON object")

        def need(name: str, kind: type | tuple[type, ...], expected: str) -> Any:
            if name not in data:
                raise CheckpointError(f"{source}: field {name!r} missing (expected {expected})")
            if not isinstance(data[name], kind) or isinstance(data[name], bool) and kind is not bool:
                raise CheckpointError(f"{source}: field {name!r} = {data[name]!r}, expected {expected}")
            return data[name]

        version = need("format_version", int, f"integer {FORMAT_VERSION}")
        if version != FORMAT_VERSION:
            raise CheckpointError(f"{source}: field 'format_version' = {version}, expected {FORMAT_VERSION}")
        layout = LatentLayout.from_dict(need("layout", dict, "a layout object"), source=source)
        try:
            sampler = SamplerConfig(**need("sampler", dict, "an object with sigma_min, sigma_max, rho, ..."))
        except TypeError as err:
            raise CheckpointError(f"{source}: field 'sampler' malformed ({err})") from err
        except ValueError as err:
            raise CheckpointError(f"{source}: field 'sampler': {err}") from err
        steps = need("num_steps", dict, f"an object with integer steps for {MODES}")
        for mode in MODES:
            if not isinstance(steps.get(mode), int) or steps[mode] < 1:
                raise CheckpointError(f"{source}: field 'num_steps.{mode}' = {steps.get(mode)!r}, expected an integer >= 1")
        joint_names = tuple(need("joint_names", list, "a list of joint names"))
        chunk_size = need("chunk_size", int, "a positive integer (ALOHA: 50)")
        if chunk_size < 1:
            raise CheckpointError(f"{source}: field 'chunk_size' = {chunk_size}, expected a positive integer")
        rate = need("control_rate_hz", (int, float), "a positive number (ALOHA: 25)")
        if rate <= 0:
            raise CheckpointError(f"{source}: field 'control_rate_hz' = {rate}, expected a positive number")
        image_size = need("image_size", int, "a positive multiple of 16 (ALOHA: 224)")
        if image_size <= 0 or image_size % 16:
            raise CheckpointError(f"{source}: field 'image_size' = {image_size}, expected a positive multiple of 16")
        crop = data.get("center_crop_area")
        if crop is not None and not (isinstance(crop, (int, float)) and 0 < crop <= 1):
            raise CheckpointError(f"{source}: field 'center_crop_area' = {crop!r}, expected null or a number in (0, 1]")
        jpeg = data.get("jpeg_quality")
        if jpeg is not None and not (isinstance(jpeg, int) and 1 <= jpeg <= 100):
            raise CheckpointError(f"{source}: field 'jpeg_quality' = {jpeg!r}, expected null or an integer 1..100")
        stored = data.get("stored_image_size")
        if stored is not None and not (isinstance(stored, int) and not isinstance(stored, bool) and stored > 0):
            raise CheckpointError(
                f"{source}: field 'stored_image_size' = {stored!r}, expected null or a positive integer (ALOHA: 256)"
            )
        crop_box = data.get("crop_box")
        if crop_box is not None:
            try:
                crop_box = validate_crop_box(crop_box)
            except ValueError as err:
                raise CheckpointError(f"{source}: field 'crop_box': {err}") from err
        seed = data.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise CheckpointError(f"{source}: field 'seed' = {seed!r}, expected an integer >= 0 (ALOHA: 195)")
        cameras = data.get("camera_names")
        if cameras is not None and tuple(cameras) != layout.cameras:
            raise CheckpointError(
                f"{source}: field 'camera_names' = {cameras}, expected the layout's cameras {list(layout.cameras)}"
            )
        vae = need("vae", dict, "an object with 'subfolder' or 'pretrained_model_name_or_path'")
        if "subfolder" not in vae and "pretrained_model_name_or_path" not in vae:
            raise CheckpointError(f"{source}: field 'vae' = {vae}, expected 'subfolder' or 'pretrained_model_name_or_path'")
        return cls(
            robot=str(need("robot", str, "a robot name")),
            joint_names=joint_names,
            chunk_size=chunk_size,
            control_rate_hz=float(rate),
            layout=layout,
            sampler=sampler,
            num_steps={mode: int(steps[mode]) for mode in MODES},
            image_size=image_size,
            center_crop_area=None if crop is None else float(crop),
            jpeg_quality=jpeg,
            stored_image_size=stored,
            crop_box=crop_box,
            seed=seed,
            vae=dict(vae),
            default_task=str(data.get("default_task", "")),
        )


# ---------------------------------------------------------------------- T5 table
def shipped_checkpoint(name: str) -> Path:
    """Path of a checkpoint folder shipped with the package (``cosmos_policy_ros/checkpoints/<name>``)."""
    return SHIPPED_CHECKPOINTS_DIR / name


def save_text_embeddings(table: dict[str, torch.Tensor], path: str | Path) -> None:
    """Task string -> ``[L, D]``; task strings go in the metadata (any characters)."""
    tasks = sorted(table)
    tensors = {f"task_{i:05d}": table[task].detach().contiguous().cpu() for i, task in enumerate(tasks)}
    save_file(tensors, str(path), metadata={"tasks": json.dumps(tasks)})


def load_text_embeddings(path: str | Path, text_dim: int | None = None) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: T5 embedding table not found")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if "tasks" not in metadata:
        raise CheckpointError(f"{path}: metadata field 'tasks' missing (expected a JSON list of task strings)")
    tasks = json.loads(metadata["tasks"])
    tensors = load_file(str(path))
    table: dict[str, torch.Tensor] = {}
    for i, task in enumerate(tasks):
        key = f"task_{i:05d}"
        if key not in tensors:
            raise CheckpointError(f"{path}: tensor {key!r} for task {task!r} missing")
        emb = tensors[key]
        if emb.ndim != 2 or (text_dim is not None and emb.shape[1] != text_dim):
            raise CheckpointError(
                f"{path}: embedding of task {task!r} has shape {tuple(emb.shape)}, expected [L, {text_dim or 'D'}]"
            )
        table[task] = emb
    if not table:
        raise CheckpointError(f"{path}: no task embeddings (expected at least one)")
    return table


WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


def load_diffusers_model(
    model_cls: type, folder: Path, device: str | torch.device, dtype: torch.dtype, on_meta: bool = False
) -> torch.nn.Module:
    """Load a diffusers model folder (config.json + safetensors, possibly sharded) with a
    strict key check; ``on_meta`` builds the module without allocating memory first."""
    import json as _json

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}/config.json: missing (expected a diffusers {model_cls.__name__} config)")
    config = model_cls.load_config(folder)
    index = folder / f"{WEIGHTS_FILE}.index.json"
    if index.is_file():
        files = sorted(set(_json.loads(index.read_text())["weight_map"].values()))
    elif (folder / WEIGHTS_FILE).is_file():
        files = [WEIGHTS_FILE]
    else:
        raise CheckpointError(f"{folder}/{WEIGHTS_FILE}: missing (expected the {model_cls.__name__} weights)")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(str(folder / name)))
    state = {key: value.to(dtype) if value.is_floating_point() else value for key, value in state.items()}
    if on_meta:
        with torch.device("meta"):
            model = model_cls.from_config(config)
    else:
        model = model_cls.from_config(config)
    try:
        result = model.load_state_dict(state, strict=False, assign=on_meta)
    except RuntimeError as err:
        raise CheckpointError(f"{folder}: weights do not match config.json ({err})") from err
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{folder}: weights do not match config.json: missing {result.missing_keys[:10]}, "
            f"unexpected {result.unexpected_keys[:10]}"
        )
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # the dtype cast is intended (no fp32-only modules used)
    try:
        return model.to(device=device, dtype=dtype).eval()
    finally:
        diffusers_logging.set_verbosity(verbosity)


# ---------------------------------------------------------------------- checkpoint
@dataclass
class CosmosCheckpoint:
    """A loaded checkpoint folder (modules on the requested device/dtype)."""

    config: PolicyConfig
    transformer: torch.nn.Module
    vae: torch.nn.Module | None
    stats: NormalizationStats
    text_embeddings: dict[str, torch.Tensor]

    def validate(self, source: str = "checkpoint") -> None:
        cfg = self.config
        tcfg = self.transformer.config
        if tcfg.in_channels != 17 or tcfg.out_channels != 16 or not tcfg.concat_padding_mask:
            raise CheckpointError(
                f"{source}/{TRANSFORMER_DIR}/config.json: in_channels={tcfg.in_channels}, out_channels="
                f"{tcfg.out_channels}, concat_padding_mask={tcfg.concat_padding_mask}; expected 17, 16, true"
            )
        if self.stats.action_dim != cfg.dof or self.stats.proprio_dim != cfg.dof:
            raise CheckpointError(
                f"{source}/{STATS_FILE}: actions/proprio statistics have {self.stats.action_dim}/"
                f"{self.stats.proprio_dim} dimensions, expected {cfg.dof} (one per joint in {CONFIG_FILE})"
            )
        latent = cfg.image_size // 8
        capacity = 16 * latent * latent
        if cfg.chunk_size * cfg.dof > capacity:
            raise CheckpointError(
                f"{source}/{CONFIG_FILE}: chunk_size x dof = {cfg.chunk_size * cfg.dof} does not fit a latent "
                f"frame of {capacity} elements at image_size {cfg.image_size}"
            )
        for task, emb in self.text_embeddings.items():
            if emb.shape[-1] != tcfg.text_embed_dim:
                raise CheckpointError(
                    f"{source}/{T5_FILE}: task {task!r} embedding width {emb.shape[-1]}, expected "
                    f"text_embed_dim {tcfg.text_embed_dim}"
                )

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2))
        self.transformer.save_pretrained(folder / TRANSFORMER_DIR, safe_serialization=True)
        if "subfolder" in self.config.vae and "pretrained_model_name_or_path" not in self.config.vae:
            if self.vae is None:
                raise CheckpointError("save_pretrained: config references vae/ but no VAE is loaded")
            self.vae.save_pretrained(folder / self.config.vae["subfolder"], safe_serialization=True)
        self.stats.save(folder / STATS_FILE)
        save_text_embeddings(self.text_embeddings, folder / T5_FILE)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        load_vae: bool = True,
        load_transformer_weights: bool = True,
    ) -> "CosmosCheckpoint":
        """``load_transformer_weights=False`` builds the transformer on the meta device
        (its config, no memory): for denoisers that bring their own network (ONNX)."""
        from diffusers import AutoencoderKLWan, CosmosTransformer3DModel

        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: checkpoint folder not found")
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            raise CheckpointError(f"{config_path}: missing (expected the checkpoint's {CONFIG_FILE})")
        try:
            raw = json.loads(config_path.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{config_path}: not valid JSON ({err})") from err
        config = PolicyConfig.from_dict(raw, source=str(config_path))
        stats = NormalizationStats.load(folder / STATS_FILE)
        tdir = folder / TRANSFORMER_DIR
        if not (tdir / "config.json").is_file():
            raise CheckpointError(f"{tdir}/config.json: missing (expected a diffusers CosmosTransformer3DModel)")
        if load_transformer_weights:
            transformer = load_diffusers_model(CosmosTransformer3DModel, tdir, device, dtype, on_meta=True)
        else:
            with torch.device("meta"):
                transformer = CosmosTransformer3DModel.from_config(CosmosTransformer3DModel.load_config(tdir))
        vae = None
        if load_vae:
            ref = config.vae
            source = ref.get("pretrained_model_name_or_path", str(folder))
            try:
                if "pretrained_model_name_or_path" in ref:
                    vae = AutoencoderKLWan.from_pretrained(source, subfolder=ref.get("subfolder"), torch_dtype=dtype)
                else:
                    vae = load_diffusers_model(AutoencoderKLWan, folder / ref["subfolder"], device, dtype)
            except (OSError, ValueError) as err:
                raise CheckpointError(
                    f"{config_path}: field 'vae' = {ref}: cannot load AutoencoderKLWan ({err}); expected a Wan2.1 "
                    f"VAE folder or a cached repo id such as {WAN21_VAE_REPO!r} with subfolder 'vae'"
                ) from err
            vae = vae.to(device).eval()
        table = load_text_embeddings(folder / T5_FILE, text_dim=transformer.config.text_embed_dim)
        checkpoint = cls(config=config, transformer=transformer, vae=vae, stats=stats, text_embeddings=table)
        checkpoint.validate(str(folder))
        return checkpoint


def predict2_2b_transformer(device: str | torch.device = "meta") -> torch.nn.Module:
    """The full-size Cosmos-Predict2-2B transformer (meta device: no memory, for counting)."""
    from diffusers import CosmosTransformer3DModel

    with torch.device(device):
        return CosmosTransformer3DModel(**PREDICT2_2B_TRANSFORMER_CONFIG)
