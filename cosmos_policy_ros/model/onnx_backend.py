"""ONNX Runtime backend for the Cosmos denoiser: export, ``OnnxDenoiser`` and the policy factory.

The exported module is ``DenoiserNetwork`` (preconditioning + diffusers
``CosmosTransformer3DModel``, see ``model/denoiser.py``), so ``OnnxDenoiser`` is a drop-in
``Denoiser`` and the sampler, VAE and normalization code stay the same for both backends.

Export folder (``cosmos-policy-ros export-onnx CHECKPOINT OUT``; ship it as
``<checkpoint>/onnx/`` so a deployment never exports)::

    denoiser.onnx        float32, inputs noisy_latents [batch, 16, T, h, w], sigma [batch, T],
                         condition_frames [batch, T], text_embedding [batch, L, D] -> x0;
                         batch is dynamic (best-of-N), T, h, w, L, D are the checkpoint's
    denoiser.onnx.data   the weights, only for models over the 2 GB protobuf limit (2B: ~8 GB)
    denoiser.json        shapes, opset, versions, the source checkpoint's fingerprint and
                         the max |ONNX - torch| measured at export

``make_onnx_policy(checkpoint)`` uses ``<checkpoint>/onnx/`` when present (refusing one
exported from other weights) and otherwise exports once into a cache folder
(``$COSMOS_POLICY_ROS_CACHE``, else ``$XDG_CACHE_HOME/cosmos_policy_ros``, else
``~/.cache/cosmos_policy_ros``), keyed by the checkpoint's fingerprint.

Execution providers are tried in the order TensorRT -> CUDA -> CPU (the ones this
onnxruntime build has; ``pip install .[gpu]`` brings onnxruntime-gpu); the provider that
actually runs is reported at start-up.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

FORMAT_VERSION = 1
ONNX_SUBDIR = "onnx"
MODEL_FILE = "denoiser.onnx"
META_FILE = "denoiser.json"
INPUT_NAMES = ("noisy_latents", "sigma", "condition_frames", "text_embedding")
OUTPUT_NAME = "x0"
# Opset 18 is what ONNX Runtime >= 1.14 and TensorRT >= 8.6 all read; 18-23 export the same here.
DEFAULT_OPSET = 18
DEFAULT_MAX_BATCH = 64  # TensorRT optimization profile; larger batches are split by the policy
PROTOBUF_LIMIT_BYTES = 2 * 1024**3
PARITY_TOLERANCE = 1e-4  # max |ONNX - torch| x0 accepted at export (float32; measured ~1e-6)
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

Log = Callable[[str], None]


def _stderr_log(message: str) -> None:
    # Nodes do not configure Python logging; stderr ends up in the node's log.
    print(f"[cosmos_policy_ros.onnx] {message}", file=sys.stderr, flush=True)


class OnnxModelError(RuntimeError):
    """An exported denoiser that is missing, unreadable or does not fit its checkpoint."""


# ---------------------------------------------------------------------- checkpoint facts
def checkpoint_fingerprint(checkpoint_dir: str | Path) -> str:
    """sha256 over the transformer's config.json and weight files (name, size, content).

    Files over 64 MiB are hashed by their first and last 16 MiB plus their size: a
    fine-tune changes every tensor, so this tells exports apart without reading 8 GB at
    every start-up. It is a staleness check, not an integrity check.
    """
    from cosmos_policy_ros.model.checkpoint import TRANSFORMER_DIR

    folder = Path(checkpoint_dir) / TRANSFORMER_DIR
    files = sorted(p for p in folder.glob("*") if p.is_file() and (p.suffix == ".safetensors" or p.name == "config.json"))
    if not files:
        raise OnnxModelError(f"{folder}: no transformer config.json or weights to fingerprint")
    digest = hashlib.sha256()
    window = 16 * 1024**2
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}:".encode())
        with path.open("rb") as handle:
            if size <= 4 * window:
                digest.update(handle.read())
            else:
                digest.update(handle.read(window))
                handle.seek(size - window)
                digest.update(handle.read(window))
    return digest.hexdigest()


def _input_shapes(checkpoint) -> dict[str, list[int | str]]:
    """The denoiser's input shapes for a loaded ``CosmosCheckpoint`` ("batch" is dynamic)."""
    from cosmos_policy_ros.model.checkpoint import T5_FILE, CheckpointError

    cfg = checkpoint.config
    frames = len(cfg.layout.slots)
    latent = cfg.image_size // 8
    lengths = {tuple(emb.shape) for emb in checkpoint.text_embeddings.values()}
    if len(lengths) != 1:
        raise CheckpointError(
            f"{T5_FILE}: task embeddings have shapes {sorted(lengths)}; an exported denoiser needs one "
            "[L, D] for all tasks (pad the T5 embeddings to the same length, 512 as upstream)"
        )
    (text_len, text_dim), = lengths
    z_dim = checkpoint.transformer.config.out_channels
    return {
        "noisy_latents": ["batch", z_dim, frames, latent, latent],
        "sigma": ["batch", frames],
        "condition_frames": ["batch", frames],
        "text_embedding": ["batch", text_len, text_dim],
    }


def example_inputs(shapes: dict[str, list[int | str]], batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random denoiser inputs in the policy's value ranges (for export, parity and benches)."""
    gen = torch.Generator().manual_seed(seed)
    dims = {name: [batch if d == "batch" else int(d) for d in shape] for name, shape in shapes.items()}
    frames = dims["sigma"][1]
    condition = torch.zeros(batch, frames)
    condition[:, : frames // 2] = 1.0  # first half clean, as in policy mode
    sigma = torch.where(condition > 0, torch.zeros(()), torch.rand(batch, 1, generator=gen) * 76.0 + 4.0)
    latents = torch.randn(*dims["noisy_latents"], generator=gen) * (1.0 + sigma[:, None, :, None, None])
    text = torch.randn(*dims["text_embedding"], generator=gen) * 0.1
    return latents, sigma, condition, text


# ---------------------------------------------------------------------- export
@contextlib.contextmanager
def _quiet_exporter():
    """The exporter logs a warning per missing torchvision op; none are used here."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def export_onnx(
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    opset: int = DEFAULT_OPSET,
    max_batch: int = DEFAULT_MAX_BATCH,
    external_data: bool | None = None,
    verify: bool = True,
    log: Log = _stderr_log,
) -> Path:
    """Export the checkpoint's ``DenoiserNetwork`` to ``out_dir/denoiser.onnx`` (float32).

    external_data: None -> only when the weights exceed the 2 GB protobuf limit.
    verify: run the export in ONNX Runtime (CPU) at batch 1 and 3 against torch and
        refuse an export whose max |x0 difference| exceeds ``PARITY_TOLERANCE``.
    Returns the path of the .onnx file; ``denoiser.json`` is written last, so a folder
    with it is complete.
    """
    from cosmos_policy_ros.model.checkpoint import CosmosCheckpoint
    from cosmos_policy_ros.model.denoiser import TorchDenoiser

    started = time.perf_counter()
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    log(f"export: loading {checkpoint_dir} (transformer only, float32 on CPU)")
    checkpoint = CosmosCheckpoint.from_pretrained(checkpoint_dir, device="cpu", dtype=torch.float32, load_vae=False)
    network = TorchDenoiser(checkpoint.transformer).network
    shapes = _input_shapes(checkpoint)
    weight_bytes = sum(p.numel() * p.element_size() for p in network.parameters())
    parameters = sum(p.numel() for p in network.parameters())
    use_external = weight_bytes > PROTOBUF_LIMIT_BYTES if external_data is None else bool(external_data)

    # Batch 2, not 1: torch.export specializes size-1 dimensions to constants.
    args = example_inputs(shapes, batch=2)
    batch = torch.export.Dim("batch", min=1, max=max(max_batch, 2))
    dynamic = tuple({0: batch} for _ in INPUT_NAMES)
    t0 = time.perf_counter()
    log(f"export: tracing with torch.export ({parameters / 1e6:.2f} M parameters, latents "
        f"{shapes['noisy_latents'][1:]}, text {shapes['text_embedding'][1:]}, dynamic batch 1..{max(max_batch, 2)})")
    # torch.export first, outside the ONNX exporter: under torch.onnx.export diffusers'
    # Cosmos attention turns its head-repeat count into a tensor, which makes the graph
    # data-dependent (non-strict tracing fails, strict tracing is 2x slower).
    with torch.no_grad():
        exported = torch.export.export(network, args, dynamic_shapes=dynamic, strict=False)
    t1 = time.perf_counter()
    log(f"export: traced in {t1 - t0:.1f} s; converting to ONNX opset {opset} and optimizing")
    with _quiet_exporter():
        program = torch.onnx.export(
            exported, args, dynamo=True, opset_version=opset, input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME], optimize=True, verbose=False,
        )
    t2 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILE
    (out_dir / META_FILE).unlink(missing_ok=True)  # the folder is incomplete until the JSON is back
    (out_dir / f"{MODEL_FILE}.data").unlink(missing_ok=True)
    log(f"export: converted in {t2 - t1:.1f} s; writing {model_path}"
        + (f" with external data ({weight_bytes / 1e9:.1f} GB of weights)" if use_external else ""))
    program.save(model_path, external_data=use_external)
    data_file = out_dir / f"{MODEL_FILE}.data"
    metadata: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model_file": MODEL_FILE,
        "external_data_file": data_file.name if data_file.exists() else None,
        "module": "cosmos_policy_ros.model.denoiser.DenoiserNetwork",
        "opset": opset,
        "dtype": "float32",
        "inputs": {name: {"shape": shapes[name], "dtype": "float32"} for name in INPUT_NAMES},
        "outputs": {OUTPUT_NAME: {"shape": shapes["noisy_latents"], "dtype": "float32"}},
        "dynamic_axes": {"batch": {"min": 1, "max": max(max_batch, 2)}},
        "parameters": parameters,
        "weight_bytes": weight_bytes,
        "source_checkpoint": {
            "path": str(checkpoint_dir.resolve()),
            "fingerprint": checkpoint_fingerprint(checkpoint_dir),
            "robot": checkpoint.config.robot,
        },
        "versions": _versions(),
    }
    if verify:
        t3 = time.perf_counter()
        log("export: checking ONNX Runtime (CPU) against torch at batch 1 and 3")
        diff = _parity(network, model_path, shapes)
        metadata["max_abs_diff_vs_torch"] = diff
        if not diff <= PARITY_TOLERANCE:
            raise OnnxModelError(f"{model_path}: ONNX Runtime differs from torch by {diff:.3g} "
                                 f"(> {PARITY_TOLERANCE:g}); the export is wrong, not written as complete")
        log(f"export: max |ONNX - torch| = {diff:.2g} (checked in {time.perf_counter() - t3:.1f} s)")
    metadata["export_seconds"] = round(time.perf_counter() - started, 2)
    (out_dir / META_FILE).write_text(json.dumps(metadata, indent=2))
    size = model_path.stat().st_size + (data_file.stat().st_size if data_file.exists() else 0)
    log(f"export: done in {metadata['export_seconds']:.1f} s: {model_path} ({size / 1e6:.1f} MB), {out_dir / META_FILE}")
    return model_path


def _versions() -> dict[str, str]:
    import diffusers
    import onnx
    import onnxscript

    versions = {"torch": torch.__version__, "diffusers": diffusers.__version__, "onnx": onnx.__version__,
                "onnxscript": onnxscript.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return versions


def _parity(network: torch.nn.Module, model_path: Path, shapes: dict[str, list[int | str]]) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in (1, 3):
        inputs = example_inputs(shapes, batch=batch, seed=batch)
        with torch.no_grad():
            reference = network(*inputs).numpy()
        (out,) = session.run(None, {name: t.numpy() for name, t in zip(INPUT_NAMES, inputs)})
        worst = max(worst, float(np.max(np.abs(out - reference))))
    return worst


# ---------------------------------------------------------------------- runtime
def select_providers(
    requested: Sequence[str] | None = None, available: Sequence[str] | None = None
) -> list[str]:
    """The providers to ask ONNX Runtime for, best first, always ending with CPU.

    requested: preference order (default TensorRT, CUDA, CPU); names this onnxruntime
    build lacks are skipped (the CPU-only wheel has CPU only).
    """
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    order = list(requested or PROVIDER_PREFERENCE)
    chosen = [p for p in order if p in available and p != "CPUExecutionProvider"]
    return chosen + ["CPUExecutionProvider"]


class OnnxDenoiser:
    """``Denoiser`` backed by an exported ``denoiser.onnx`` in ONNX Runtime.

    model_path: the .onnx file or the folder holding it (and ``denoiser.json``).
    providers: preference order, see ``select_providers``; the one that runs is
        ``self.provider`` and is reported through ``log`` at start-up.
    intra_op_threads: CPU threads per call (None: ONNX Runtime's default, the physical cores).
    """

    def __init__(
        self,
        model_path: str | Path,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        trt_cache_dir: str | Path | None = None,
        log: Log = _stderr_log,
    ) -> None:
        import onnxruntime as ort

        path = Path(model_path)
        if path.is_dir():
            path = path / MODEL_FILE
        if not path.is_file():
            raise OnnxModelError(f"{path}: ONNX denoiser not found; create it with "
                                 "`cosmos-policy-ros export-onnx CHECKPOINT OUT`")
        self.path = path
        self.metadata = read_metadata(path.parent) if (path.parent / META_FILE).is_file() else {}
        self.max_batch = int(self.metadata.get("dynamic_axes", {}).get("batch", {}).get("max", DEFAULT_MAX_BATCH))
        options = ort.SessionOptions()
        if intra_op_threads:
            options.intra_op_num_threads = int(intra_op_threads)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ONNX Runtime's threads busy-wait after each call by default; between denoiser
        # calls the sampler, the VAE (torch) and the 50 Hz executor need those cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: TensorRT/CUDA fallbacks are reported below
        wanted = select_providers(providers)
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=[self._provider_entry(p, trt_cache_dir) for p in wanted]
            )
        except Exception as err:  # onnxruntime raises its own pybind types (InvalidProtobuf, Fail, ...)
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise OnnxModelError(f"{path}: ONNX Runtime cannot load the denoiser ({reason}); the file is "
                                 "corrupt or incomplete: re-export it with `cosmos-policy-ros export-onnx "
                                 "CHECKPOINT OUT`") from err
        names = tuple(i.name for i in self.session.get_inputs())
        if names != INPUT_NAMES or [o.name for o in self.session.get_outputs()] != [OUTPUT_NAME]:
            raise OnnxModelError(f"{path}: inputs {list(names)}, expected {list(INPUT_NAMES)} -> {OUTPUT_NAME!r}; "
                                 "not a denoiser exported by `cosmos-policy-ros export-onnx`")
        self.input_shapes = {i.name: list(i.shape) for i in self.session.get_inputs()}
        self.provider = self.session.get_providers()[0]
        skipped = [p for p in wanted if p not in self.session.get_providers()]
        log(f"denoiser {path} on {self.provider}"
            + (f" ({', '.join(skipped)} failed to start, see onnxruntime's log)" if skipped else "")
            + f"; providers tried {wanted}, available {ort.get_available_providers()}")

    def _provider_entry(self, provider: str, trt_cache_dir: str | Path | None) -> str | tuple[str, dict]:
        if provider != "TensorrtExecutionProvider":
            return provider
        # One TensorRT profile covering the exported batch range; engines are cached
        # because building one takes minutes for the 2B model.
        def shape(batch: int) -> str:
            return ",".join(
                f"{name}:" + "x".join(str(batch if d == "batch" else d) for d in spec["shape"])
                for name, spec in self.metadata.get("inputs", {}).items()
            )

        cache = Path(trt_cache_dir) if trt_cache_dir else cache_root() / "tensorrt"
        options: dict[str, Any] = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}
        if self.metadata.get("inputs"):
            options.update(trt_profile_min_shapes=shape(1), trt_profile_opt_shapes=shape(1),
                           trt_profile_max_shapes=shape(self.max_batch))
        return provider, options

    def __call__(
        self,
        noisy_latents: torch.Tensor,
        sigma: torch.Tensor,
        condition_frames: torch.Tensor,
        text_embedding: torch.Tensor,
    ) -> torch.Tensor:
        feed = {}
        for name, tensor in zip(INPUT_NAMES, (noisy_latents, sigma, condition_frames, text_embedding)):
            array = np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy())
            expected = self.input_shapes[name]
            if array.ndim != len(expected) or any(isinstance(e, int) and e != a for e, a in zip(expected, array.shape)):
                raise ValueError(f"{name} has shape {list(array.shape)}, the exported denoiser {self.path} "
                                 f"takes {expected}")
            feed[name] = array
        (x0,) = self.session.run([OUTPUT_NAME], feed)
        return torch.from_numpy(x0).to(noisy_latents.device)


def read_metadata(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / META_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise OnnxModelError(f"{path}: missing (an export folder is complete when it has {META_FILE})") from err
    except json.JSONDecodeError as err:
        raise OnnxModelError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise OnnxModelError(f"{path}: field 'format_version' = {data.get('format_version') if isinstance(data, dict) else data!r}, "
                             f"expected {FORMAT_VERSION}")
    return data


# ---------------------------------------------------------------------- policy
def cache_root() -> Path:
    if os.environ.get("COSMOS_POLICY_ROS_CACHE"):
        return Path(os.environ["COSMOS_POLICY_ROS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cosmos_policy_ros"


def find_or_export(checkpoint_dir: str | Path, opset: int = DEFAULT_OPSET, log: Log = _stderr_log) -> Path:
    """The export folder for a checkpoint: ``<checkpoint>/onnx/`` if present (it must come
    from these weights), else the cache folder, exporting into it on first use."""
    checkpoint_dir = Path(checkpoint_dir)
    fingerprint = checkpoint_fingerprint(checkpoint_dir)
    shipped = checkpoint_dir / ONNX_SUBDIR
    if (shipped / MODEL_FILE).exists() or (shipped / META_FILE).exists():
        source = read_metadata(shipped).get("source_checkpoint", {})
        if source.get("fingerprint") != fingerprint:
            raise OnnxModelError(
                f"{shipped / META_FILE}: field 'source_checkpoint.fingerprint' = {source.get('fingerprint')!r} does "
                f"not match this checkpoint's transformer ({fingerprint}); it was exported from other weights. "
                f"Re-export: cosmos-policy-ros export-onnx {checkpoint_dir} {shipped}")
        return shipped
    cached = cache_root() / ONNX_SUBDIR / f"{fingerprint[:16]}-opset{opset}"
    if (cached / META_FILE).is_file():
        log(f"using cached ONNX export {cached} of {checkpoint_dir}")
        return cached
    log(f"{checkpoint_dir} has no {ONNX_SUBDIR}/{MODEL_FILE}: exporting once into {cached} (ship it with "
        f"`cosmos-policy-ros export-onnx {checkpoint_dir} {shipped}` to skip this)")
    cached.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{cached.name}-", dir=cached.parent))
    try:
        export_onnx(checkpoint_dir, staging, opset=opset, log=log)
        try:
            staging.rename(cached)
        except OSError:  # another process finished the same export first: use theirs
            if not (cached / META_FILE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cached


def make_onnx_policy(
    checkpoint: str | Path,
    seed: int = 0,
    providers: Sequence[str] | None = None,
    intra_op_threads: int | None = None,
    device: str | torch.device | None = None,
    decode_future_images: bool = True,
    log: Log = _stderr_log,
):
    """A ``CosmosPolicy`` whose denoiser runs in ONNX Runtime (VAE and sampler in torch).

    device: where the VAE runs (default as the torch backend: CUDA when available).
    """
    from cosmos_policy_ros.model.checkpoint import CosmosCheckpoint
    from cosmos_policy_ros.model.cosmos_policy import (
        CosmosPolicy,
        default_device,
        default_dtype,
    )

    folder = find_or_export(checkpoint, log=log)
    metadata = read_metadata(folder)
    device = torch.device(device) if device is not None else default_device()
    # The transformer is built on the meta device and loaded here too: CosmosCheckpoint
    # has no VAE-only loading yet, and the shapes below are checked against its config.
    # The ONNX file carries the network: load the transformer's config, not its weights.
    loaded = CosmosCheckpoint.from_pretrained(checkpoint, device=device, dtype=default_dtype(device),
                                              load_transformer_weights=False)
    shapes = _input_shapes(loaded)
    exported = {name: spec["shape"] for name, spec in metadata.get("inputs", {}).items()}
    if exported != shapes:
        raise OnnxModelError(f"{folder / META_FILE}: field 'inputs' has shapes {exported}, the checkpoint "
                             f"{checkpoint} needs {shapes}; re-export with `cosmos-policy-ros export-onnx`")
    denoiser = OnnxDenoiser(folder, providers=providers, intra_op_threads=intra_op_threads, log=log)
    max_batch = denoiser.max_batch if denoiser.provider == "TensorrtExecutionProvider" else None
    return CosmosPolicy(loaded, seed=seed, decode_future_images=decode_future_images, denoiser=denoiser,
                        max_batch_size=max_batch)


# ---------------------------------------------------------------------- CLI
def add_export_onnx_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint folder (cosmos_policy.json, transformer/, ...)")
    parser.add_argument("out", nargs="?", default="",
                        help=f"output folder (default: CHECKPOINT/{ONNX_SUBDIR}, where the onnx backend looks first)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (18-23 tested)")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                        help="largest batch (candidates) the TensorRT profile covers")
    parser.add_argument("--external-data", choices=("auto", "always", "never"), default="auto",
                        help="weights in a separate .data file (auto: when over the 2 GB protobuf limit)")
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs torch check")


def run_export_onnx(args: argparse.Namespace) -> int:
    from cosmos_policy_ros.model.checkpoint import CheckpointError

    out = Path(args.out) if args.out else Path(args.checkpoint) / ONNX_SUBDIR
    external = {"auto": None, "always": True, "never": False}[args.external_data]
    try:
        export_onnx(args.checkpoint, out, opset=args.opset, max_batch=args.max_batch, external_data=external,
                    verify=not args.no_verify, log=lambda m: print(f"[export-onnx] {m}", flush=True))
    except (OnnxModelError, CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"[export-onnx] error: {err}", file=sys.stderr)
        return 1
    return 0
