"""The frozen vision tower's features, computed once: a disk cache keyed by image content and tower.

LLaVA's vision tower never trains, so an image seen twice (a second epoch, stage 1 then stage 2 on the same images,
the evaluation) gives the same features twice. `attach(model, directory)` makes the model read them from
`directory` when it has them and compute (and store) only the others:

- the key of an image is the hash of its pixel tensor, as the model receives it (so a different crop, resize or
  augmentation is a different entry, never a stale one), under a folder named after the tower: its config, its
  weights (read when the cache is attached: a tower changed afterwards needs a new `attach`), the feature selection
  (`vision_feature_layer`, `vision_feature_select_strategy`, `vision_feature_pool_size`,
  `vision_feature_global_token`), the versions of torch,
  transformers and timm, and the precision and device type the features are computed in (bf16 autocast on a CPU
  gives other numbers than float32 on a GPU, so an evaluation without autocast does not read training's entries);
- what is stored is the tower's selected feature tokens before the projector (which trains), one safetensors file
  per image, written beside and renamed into place, so concurrent processes (DDP ranks) and a killed run never leave
  a half-written entry;
- the cost on disk is `image_seq_length x channels x bytes` per image: 10 x 1,280 x 2 = 26 KB for the offline
  default (bf16, 3x3 pooled plus the global-pool token), 576 x 1,024 x 2 = 1.2 MB for CLIP ViT-L/14 at 336 px
  (bf16), so ~650 GB for LLaVA-1.5's 558K stage-1 images; `VisionFeatureCache.stats()` reports what was read,
  computed and written.

Only features that need no autograd graph are cached (a frozen tower in training, any tower under `torch.no_grad`):
when the tower trains, or pixels require grad, the model computes as usual. Not for a sharded tower (ZeRO-3, FSDP).
"""

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .utils import atomic_write

logger = logging.getLogger(__name__)


class VisionFeatureCache:
    """Selected vision features per image on disk (see the module docstring); `attach` installs one on a model."""

    def __init__(self, directory: str | Path, tower_key: str):
        self.directory = Path(directory)
        self.tower_key = tower_key
        self.hits = self.misses = self.bytes_written = 0
        self.bytes_per_image: int | None = None

    def __call__(self, pixel_values: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The features of `pixel_values` `(num_images, ...)`: read where stored, `compute(missing pixels)` for the
        rest (stored for next time), in the images' order."""
        folder = self.directory / f"{self.tower_key}-{_compute_precision(pixel_values.device)}"
        on_cpu = pixel_values.detach().to("cpu")  # one copy for the whole batch (one sync on a GPU)
        keys = [_content_key(image) for image in on_cpu]
        paths = [folder / key[:2] / f"{key}.safetensors" for key in keys]
        found: dict[str, torch.Tensor] = {}
        for key, path in zip(keys, paths):
            if key not in found and path.is_file():
                stored = self._load(path)
                if stored is not None:
                    found[key] = stored.to(pixel_values.device)
        # Each image not found is computed once, also when it comes several times in the batch (blank images).
        first_of = {key: index for index, key in reversed(list(enumerate(keys))) if key not in found}
        missing = sorted(first_of.values())
        self.hits += sum(key in found for key in keys)
        self.misses += len(missing)
        if missing:
            computed = compute(pixel_values[missing])
            for row, index in enumerate(missing):
                found[keys[index]] = computed[row]
                self._store(paths[index], computed[row])
        return torch.stack([found[key] for key in keys])

    def _load(self, path: Path) -> torch.Tensor | None:
        try:
            return load_file(path)["features"]
        except Exception as error:  # noqa: BLE001 - a damaged entry (a full disk, an edit) is computed again
            logger.warning("vision feature cache: %s cannot be read (%s); computing it again.", path, error)
            return None

    def _store(self, path: Path, features: torch.Tensor) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tensor = features.detach().to("cpu").contiguous()
        self.bytes_per_image = tensor.numel() * tensor.element_size()
        # Concurrent processes storing one entry store the same bytes; a killed write never leaves a partial entry.
        atomic_write(path, lambda temporary: save_file({"features": tensor}, temporary))
        self.bytes_written += path.stat().st_size

    def stats(self) -> dict[str, Any]:
        """What this process read (`hits`), computed (`misses`) and wrote, for logs and the training record."""
        return {
            "directory": str(self.directory),
            "tower_key": self.tower_key,
            "hits": self.hits,
            "misses": self.misses,
            "bytes_per_image": self.bytes_per_image,
            "bytes_written": self.bytes_written,
        }


def _llava_model(model: torch.nn.Module) -> torch.nn.Module | None:
    from .modeling_llava import LlavaModel

    return next((module for module in model.modules() if isinstance(module, LlavaModel)), None)


def installed_cache(model: torch.nn.Module) -> VisionFeatureCache | None:
    """The cache `attach` installed on `model` (or on the llava_hf model it wraps), if any."""
    inner = _llava_model(model)
    return None if inner is None else inner.vision_feature_cache


def attach(model: torch.nn.Module, directory: str | Path) -> VisionFeatureCache:
    """Install a `VisionFeatureCache` in `directory` on `model` (a llava_hf model, also inside a PEFT wrapper) and
    return it. Sharded towers (ZeRO-3, FSDP) are refused: their weights, part of the key, are not on this process."""
    inner = _llava_model(model)
    if inner is None:
        raise ValueError(f"vision_feature_cache needs a llava_hf model; got {type(model).__name__}.")
    if Path(directory).exists() and not Path(directory).is_dir():  # else the first store fails, mid-run
        raise ValueError(f"vision_feature_cache {directory} is a file; give a folder (created when missing).")
    tower = inner.vision_tower
    if any(
        getattr(p, "ds_numel", None) is not None or type(p).__name__ == "DTensor" or p.device.type == "meta"
        for p in tower.parameters()
    ):
        raise ValueError(
            "vision_feature_cache: the vision tower is sharded or not loaded in this process (ZeRO-3, FSDP), so its "
            "weights, part of the cache key, are not here; unset vision_feature_cache or train with ZeRO-2 / DDP."
        )
    cache = VisionFeatureCache(directory, tower_key(inner))
    inner.vision_feature_cache = cache
    logger.info("vision features cached in %s (tower %s)", directory, cache.tower_key)
    return cache


def tower_key(model: torch.nn.Module) -> str:
    """16 hex digits naming the tower's features: its config, weights and the feature selection of `model`'s config."""
    config = model.config
    digest = hashlib.blake2b(digest_size=8)
    # What changes between a built model and the same model saved and reloaded (paths, versions, the attention
    # kernel's name, the dtype, which the weights' bytes already carry) is left out, so stage 2 finds stage 1's entries.
    vision_config = {k: v for k, v in config.vision_config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    selection = {
        "vision_config": vision_config,
        "vision_feature_layer": config.vision_feature_layer,
        "vision_feature_select_strategy": config.vision_feature_select_strategy,
        "vision_feature_pool_size": config.vision_feature_pool_size,
        "vision_feature_global_token": config.vision_feature_global_token,
    }
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    # What computes the features: a persistent cache must not outlive an upgrade that changes them.
    selection |= {
        "format": FEATURE_FORMAT,
        "versions": [torch.__version__, installed("transformers"), installed("timm")],
        "vision_attn_implementation": getattr(config.vision_config, "_attn_implementation", None),
    }
    digest.update(json.dumps(selection, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.vision_tower.state_dict().items()):
        digest.update(name.encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


# Bumped when what is stored changes (the selected features before the projector, one tensor named "features").
FEATURE_FORMAT = 1
_VOLATILE_CONFIG_KEYS = {
    "_name_or_path",
    "name_or_path",
    "_commit_hash",
    "transformers_version",
    "architectures",
    "dtype",
    "torch_dtype",
    "_attn_implementation",
    "_attn_implementation_internal",
    "attn_implementation",
}


def _content_key(image: torch.Tensor) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{tuple(image.shape)}{image.dtype}".encode())
    digest.update(_tensor_bytes(image))
    return digest.hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    # Through uint8, which every dtype can be viewed as (numpy has no bfloat16).
    return tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _compute_precision(device: torch.device) -> str:
    """`cpu-bfloat16` under bf16 autocast on a CPU, `cuda-float32` without autocast on a GPU, ..."""
    if torch.is_autocast_enabled(device.type):
        return f"{device.type}-{str(torch.get_autocast_dtype(device.type)).removeprefix('torch.')}"
    return f"{device.type}-nocast"
