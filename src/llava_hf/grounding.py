"""The grounding meter: how much the model's answers use the image, measured throughout training.

`ImageGainCallback` takes a fixed held-out batch and, at train begin, at every `grounding_steps`-th training log and at
train end, computes its supervised-token loss (mean nats per supervised token, the training loss on the same tokens:
`-100` labels excluded) three times:

- with the real images: `grounding_loss`;
- with each image replaced by a grey image of the same size (`llava-hf eval`'s blind baseline):
  `image_gain = loss(blank) - loss(real)`;
- with each sample given another sample's images (a derangement, rolled by one among the samples with images):
  `image_gain_shuffled = loss(shuffled) - loss(real)`.

Reading: `image_gain` near zero means the projector learned nothing from the images (the answers come from the text
alone); a large `image_gain` with a small `image_gain_shuffled` means the model uses that an image is there, not what
is in it. Both should grow as stage 1 aligns the projector.

The values go into the trainer's logs (the progress bar, `report_to` integrations and `trainer.state.log_history`,
hence `llava_hf_training.json`); `training_curves.png` draws them per stage for the model card.
"""

import copy
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

CURVES_FILE = "training_curves.png"
CURVES_GUIDE = (
    "image_gain is the held-out loss with a blank image minus the loss with the real one (image_gain_shuffled: "
    "with another sample's image), in nats per supervised token; image_gain near zero: the projector learned nothing "
    "from the images."
)


@dataclass
class HeldOut:
    """The rows the meter measures on (conversational rows: `messages`, `images`, `id`) and where they came from."""

    rows: list[dict[str, Any]]
    source: str = "given rows"
    removed_from_training: int = 0
    off: str | None = None  # why there is nothing to measure

    def describe(self) -> str:
        if self.off:
            return f"off ({self.off})"
        if self.removed_from_training:
            return f"{len(self.rows)} rows with an image, held out from {self.source} (not trained on)"
        return f"{len(self.rows)} rows with an image from {self.source}"


def has_images(row: dict[str, Any]) -> bool:
    return bool(row.get("images"))


def hold_out_rows(dataset: Any, data_args: Any, stage: str = "chat", on_error: str = "raise") -> tuple[Any, HeldOut]:
    """`(train_dataset, held_out)` for a run's `LlavaDataArguments`.

    With `grounding_files`, their first `grounding_samples` rows with an image, and the training data unchanged.
    Otherwise the last `grounding_samples` rows with an image of `dataset` (a `load_llava_dataset` dataset), which are
    removed from it; at most a quarter of its image rows are held out, so a small dataset still trains. Images stay
    references (`{"path", "bytes"}`), opened by the collator like the training rows'.
    """
    wanted = data_args.grounding_samples
    if wanted <= 0:
        return dataset, HeldOut([], off="grounding_samples: 0")
    if data_args.grounding_files:
        from .data import load_llava_dataset

        held, _ = load_llava_dataset(
            data_args.grounding_files, data_args.image_root, stage=stage, on_error=on_error, progress=False
        )
        indices = [i for i, files in enumerate(held["image_files"]) if files][:wanted]
        names = ", ".join(Path(f).name for f in data_args.grounding_files)
        off = None if indices else f"no row of {names} has an image"
        return dataset, HeldOut(held.select(indices).to_list(), source=names, off=off)
    image_rows = [i for i, files in enumerate(dataset["image_files"]) if files]
    count = min(wanted, len(image_rows) // 4)
    if count == 0:
        reason = "the training data has no row with an image" if not image_rows else "too few rows with an image"
        return dataset, HeldOut([], off=f"{reason} to hold out; set grounding_files")
    if count < wanted:
        logger.warning(
            "grounding_samples is %d but the training data has %d rows with an image: holding out %d (a quarter) "
            "for the grounding meter; set grounding_files to measure on other data.",
            wanted,
            len(image_rows),
            count,
        )
    held = image_rows[-count:]
    rows = dataset.select(held).to_list()
    held_set = set(held)
    dataset = dataset.select([i for i in range(len(dataset)) if i not in held_set])
    return dataset, HeldOut(rows, source="the end of the training data", removed_from_training=count)


def blank_rows(rows: list[dict[str, Any]], max_pixels: int | None = None) -> list[dict[str, Any]]:
    """`rows` with every image replaced by a grey image of its size."""
    from .data.images import DEFAULT_MAX_PIXELS, blank_like, load_image

    blanked = []
    for row in rows:
        images = [
            blank_like(load_image(image, f"sample {row.get('id', '?')!r} image {i}", max_pixels or DEFAULT_MAX_PIXELS))
            for i, image in enumerate(row.get("images") or [])
        ]
        blanked.append({**row, "images": images})
    return blanked


def _image_key(image: Any) -> Any:
    if isinstance(image, dict):
        return image.get("path") or id(image)
    return str(image) if isinstance(image, (str, Path)) else id(image)


def shuffled_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """`rows` with each sample's images taken from another sample with images (rolled by one; a donor showing the
    same image files is passed over), repeated or cut to the sample's own image count. `None` when fewer than two
    different images are there to swap."""
    with_images = [i for i, row in enumerate(rows) if has_images(row)]
    keys = [tuple(_image_key(image) for image in rows[i]["images"]) for i in with_images]
    if len(set(keys)) < 2:
        return None
    shuffled = [dict(row) for row in rows]
    for k, index in enumerate(with_images):
        donor = (k - 1) % len(with_images)
        while keys[donor] == keys[k]:  # ends: at least two different keys
            donor = (donor - 1) % len(with_images)
        own, given = len(rows[index]["images"]), rows[with_images[donor]]["images"]
        shuffled[index]["images"] = [given[i % len(given)] for i in range(own)]
    return shuffled


class ImageGainCallback(TrainerCallback):
    """Log `grounding_loss`, `image_gain` and `image_gain_shuffled` (see the module docstring) during training.

    Args:
        held_out: the rows to measure on (`HeldOut`, or a list of rows); rows without an image are left out.
        collator: the run's collator (`LlavaDataCollator`): the held-out batch is built exactly as training batches.
        steps: measure at the first training log at least `steps` optimizer steps after the last measurement
            (default: the trainer's `logging_steps`, i.e. every training log), besides train begin and end.
        batch_size: rows per forward (default: `per_device_train_batch_size`).

    Attach it to a built trainer with `attach(trainer)`: it goes first among the trainer's callbacks, so the values it
    adds to a training log reach the integrations and the progress bar in the same line. Every process computes (a
    ZeRO-3 or FSDP forward needs them all) on the same rows; the main process's values are the ones recorded.

    Example:

    ```python
    trainer = make_trainer_class()(model=model, args=args, train_dataset=train, data_collator=collator)
    ImageGainCallback(held_out, collator).attach(trainer)
    trainer.train()
    [entry["image_gain"] for entry in trainer.state.log_history if "image_gain" in entry]
    ```
    """

    def __init__(
        self,
        held_out: HeldOut | list[dict[str, Any]],
        collator: Any,
        steps: int | None = None,
        batch_size: int | None = None,
    ):
        self.held_out = held_out if isinstance(held_out, HeldOut) else HeldOut(list(held_out))
        self.collator = collator
        self.steps = steps
        self.batch_size = batch_size
        self.trainer: Any = None
        self.history: list[dict[str, float]] = []  # every measurement, with its step
        self.off: str | None = self.held_out.off
        self._batches: dict[str, list[dict[str, torch.Tensor]]] | None = None
        self._meter_collator: Any = None
        self._last_step: int | None = None
        self._emitting = False

    def attach(self, trainer: Any) -> "ImageGainCallback":
        self.trainer = trainer
        # First in the list: `on_log` then updates a training log before the integrations and the progress bar see it.
        trainer.callback_handler.callbacks.insert(0, self)
        return self

    # -- the three batches -----------------------------------------------------------------------------------------
    def _collate(self, rows: list[dict[str, Any]], batch_size: int) -> list[dict[str, torch.Tensor]]:
        from .data.collator import BATCH_STATS_KEY

        batches = []
        for start in range(0, len(rows), batch_size):
            batch = self._meter_collator(rows[start : start + batch_size])
            batch.pop(BATCH_STATS_KEY, None)
            batches.append(batch)
        return batches

    def _build(self, args: Any) -> None:
        rows = [row for row in self.held_out.rows if has_images(row)]
        if not rows:
            self.off = self.off or f"none of the {len(self.held_out.rows)} held-out rows has an image"
            return
        # A copy: the meter's samples are not counted in the run's collator statistics.
        self._meter_collator = copy.copy(self.collator)
        if hasattr(self._meter_collator, "stats"):
            self._meter_collator.stats = Counter()
        if hasattr(self._meter_collator, "stats_in_batch"):
            self._meter_collator.stats_in_batch = False
        batch_size = self.batch_size or args.per_device_train_batch_size
        shuffled = shuffled_rows(rows)
        if shuffled is None:
            self._warn("image_gain_shuffled is not measured: the held-out rows have fewer than two different images")
        try:
            # An image that cannot be opened (ImageError) turns the meter off: these rows are not trained on, so
            # the run itself would never have met it.
            variants = {"real": rows, "blank": blank_rows(rows, getattr(self.collator, "max_pixels", None))}
            if shuffled is not None:
                variants["shuffled"] = shuffled
            self._batches = {name: self._collate(variant, batch_size) for name, variant in variants.items()}
        except ValueError as error:  # every sample of a batch skipped, or a sample the collator refuses
            self.off = f"the held-out batch cannot be collated: {error}"
            self._batches = None

    # -- measuring -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _loss(self, batches: list[dict[str, torch.Tensor]]) -> float:
        """Mean nats per supervised token over `batches` (the next-token cross-entropy, `-100` labels excluded)."""
        trainer, model = self.trainer, self.trainer.model
        total, count = 0.0, 0
        for batch in batches:
            inputs = trainer._prepare_inputs(dict(batch))  # the device, and DeepSpeed's dtype, as for training
            labels = inputs.pop("labels")
            logits = model(**inputs, use_cache=False).logits  # (batch_size, sequence_length, vocab_size)
            targets = labels[:, 1:]
            supervised = targets != -100
            picked = logits[:, :-1][supervised].float()  # (num_supervised, vocab_size)
            total += torch.nn.functional.cross_entropy(picked, targets[supervised], reduction="sum").item()
            count += int(supervised.sum())
        return total / max(count, 1)

    def measure(self) -> dict[str, float]:
        """The three losses of the held-out batch now, as `grounding_loss`, `image_gain`, `image_gain_shuffled`."""
        model = self.trainer.model
        was_training = model.training
        model.eval()
        try:
            with self.trainer.accelerator.autocast():
                losses = {name: self._loss(batches) for name, batches in self._batches.items()}
        finally:
            model.train(was_training)  # a frozen vision tower stays in eval mode (LlavaModel.train)
            _retrace_zero3(self.trainer)
        values = {"grounding_loss": losses["real"], "image_gain": losses["blank"] - losses["real"]}
        if "shuffled" in losses:
            values["image_gain_shuffled"] = losses["shuffled"] - losses["real"]
        return values

    def _record(self, step: int) -> dict[str, float]:
        values = self.measure()
        self._last_step = step
        self.history.append({"step": step, **values})
        return values

    def _emit(self, args, state, control, values: dict[str, float]) -> None:
        """Log `values` as an entry of their own (train begin and end, where no training log is due)."""
        logs = dict(values)
        if state.epoch is not None:
            logs["epoch"] = state.epoch
        state.log_history.append({**logs, "step": state.global_step})
        self._emitting = True
        try:
            self.trainer.callback_handler.on_log(args, state, control, logs)
        finally:
            self._emitting = False

    def _warn(self, message: str) -> None:
        if self.trainer is None or self.trainer.is_world_process_zero():
            logger.warning("grounding meter: %s.", message)

    @property
    def active(self) -> bool:
        return self._batches is not None and self.off is None

    # -- trainer events --------------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer is None:
            raise RuntimeError("ImageGainCallback needs its trainer: add it with callback.attach(trainer).")
        if self.steps is None:
            self.steps = max(1, int(state.logging_steps or args.logging_steps))
        if self._batches is None and self.off is None:
            self._build(args)
        if self.off:
            self._warn(f"nothing is logged: {self.off}")

    def on_step_begin(self, args, state, control, **kwargs):
        # Train begin, measured here rather than in on_train_begin, once the progress bar exists to show it.
        if self.active and self._last_step is None:
            self._emit(args, state, control, self._record(state.global_step))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._emitting or not self.active or logs is None or "loss" not in logs:
            return
        if self._last_step is not None and state.global_step - self._last_step < self.steps:
            return
        values = self._record(state.global_step)
        logs.update(values)
        entry = state.log_history[-1] if state.log_history else None
        if entry is not None and entry.get("step") == state.global_step and entry.get("loss") == logs["loss"]:
            entry.update(values)  # Trainer.log appended a copy of `logs` just before calling on_log

    def on_train_end(self, args, state, control, **kwargs):
        if self.active and self._last_step != state.global_step:
            self._emit(args, state, control, self._record(state.global_step))

    def summary(self) -> dict[str, Any]:
        """The training record's `grounding` block: where the rows came from, and the first and last measurements."""
        return {
            "samples": sum(1 for row in self.held_out.rows if has_images(row)),
            "source": self.held_out.source,
            "removed_from_training": self.held_out.removed_from_training,
            "steps": self.steps,
            "off": self.off,
            "first": self.history[0] if self.history else None,
            "last": self.history[-1] if self.history else None,
        }


def _retrace_zero3(trainer: Any) -> None:
    """Make ZeRO-3 record its parameter trace anew on the next training pass.

    ZeRO-3 fetches and releases weights by a trace of the submodules' order, recorded on one pass and then trusted.
    Recorded from the meter's forward-only passes, it misleads the training pass that follows: a measurement before
    the first training step made that step's backward meet weights already released (`The size of tensor a (0) must
    match ...`). DeepSpeed itself invalidates the trace when its hooks are re-registered; the same is done here.
    ZeRO-1/2, FSDP and DDP keep no such trace."""
    offload = getattr(getattr(trainer.model_wrapped, "optimizer", None), "parameter_offload", None)
    coordinator = offload.get_param_coordinator() if offload is not None else None
    if coordinator is None:
        return
    if not coordinator.is_invalid_trace():
        coordinator._invalidate_trace()  # no public API; deepspeed.runtime.zero.parameter_offload calls it so too
    coordinator.reset_step()  # the next forward records


def grounding_record(trainer: Any) -> dict[str, Any] | None:
    """The `grounding` block of `trainer`'s `ImageGainCallback` (None when it has none)."""
    handler = getattr(trainer, "callback_handler", None)
    for callback in getattr(handler, "callbacks", []):
        if isinstance(callback, ImageGainCallback):
            return callback.summary()
    return None


# -- the curves -----------------------------------------------------------------------------------------------------
def _series(record: dict[str, Any], key: str) -> list[tuple[int, float]]:
    return [
        (entry["step"], float(entry[key]))
        for entry in record.get("log_history") or []
        if key in entry and "step" in entry and isinstance(entry[key], (int, float))
    ]


def plot_training_curves(history: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Draw the training loss and the grounding meter of each stage's record (`llava_hf_training.json`, oldest
    first; stages follow each other on the step axis) into a small PNG at `path`. `None`, and nothing written, when
    the records hold no loss or matplotlib is not installed."""
    if not any(_series(record, "loss") or _series(record, "image_gain") for record in history):
        return None
    try:
        from matplotlib.figure import Figure  # no pyplot: no global backend or figure state
    except ImportError:
        logger.warning("matplotlib is not installed (pip install llava-hf[train]): no %s drawn.", Path(path).name)
        return None
    figure = Figure(figsize=(8, 3), dpi=100)
    loss_axes, gain_axes = figure.subplots(1, 2)
    lines = {
        loss_axes: [("loss", "training loss", "C0", ""), ("grounding_loss", "held-out loss", "C1", "o")],
        gain_axes: [("image_gain", "image_gain (blank)", "C2", "o"), ("image_gain_shuffled", "shuffled", "C3", "s")],
    }
    offset = 0
    for index, record in enumerate(history):
        for axes, specs in lines.items():
            for key, label, colour, marker in specs:
                points = _series(record, key)
                if points:
                    steps, values = zip(*points)
                    axes.plot(
                        [offset + s for s in steps],
                        values,
                        color=colour,
                        marker=marker or None,
                        markersize=3,
                        linewidth=1,
                        label=label if index == 0 else None,
                    )
            if len(history) > 1:
                axes.axvline(offset, color="grey", linestyle=":", linewidth=0.8)
                stage_label = f" stage {record.get('stage', index + 1)}"
                axes.text(
                    offset, 1.0, stage_label, transform=axes.get_xaxis_transform(), va="top", fontsize=7, color="grey"
                )
        steps = [step for key in ("loss", "image_gain") for step, _ in _series(record, key)]
        offset += int(record.get("global_step") or max(steps, default=0))
    gain_axes.axhline(0.0, color="grey", linewidth=0.8)
    loss_axes.set_title("loss (nats / supervised token)", fontsize=9)
    gain_axes.set_title("image gain (nats / supervised token)", fontsize=9)
    for axes in (loss_axes, gain_axes):
        axes.set_xlabel("optimizer step" + (" (stages in order)" if len(history) > 1 else ""), fontsize=8)
        axes.tick_params(labelsize=7)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=7)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, format="png")
    return path


def write_training_curves(model_dir: str | Path, overwrite: bool = True) -> Path | None:
    """`training_curves.png` in `model_dir`, drawn from its training record and its earlier stages' (followed back as
    the model card does); with `overwrite=False` an existing file is kept. `None` when there is nothing to draw."""
    from .training_record import load_training_history

    path = Path(model_dir) / CURVES_FILE
    if path.is_file() and not overwrite:
        return path
    return plot_training_curves(load_training_history(model_dir), path)
