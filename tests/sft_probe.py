"""`recipes/sft.py` with probes, for the multi-process saving tests of tests/test_training.py.

    python -m torch.distributed.run --nproc_per_node 2 tests/sft_probe.py --config RECIPE.yaml

Environment:

- `LLAVA_HF_PROBE_DIR` (required): where each process writes
  - `trained-rank{N}.safetensors`: the weights it holds when training ends, just before the end-of-run save, gathered
    here from ZeRO-3 partitions or FSDP shards, independently of the code under test;
  - `writes-rank{N}.txt`: every file it opened for writing under the recipe's `output_dir`, one path a line (a Python
    audit hook: files written from Rust, such as safetensors and tokenizer.json, are not seen; their content is
    checked instead).
- `LLAVA_HF_PROBE_FSDP_ON_CPU=1`: let accelerate use FSDP on the CPU. Without an accelerator it sets up MULTI_CPU
  (DDP over gloo) and ignores the FSDP plugin; FSDP2 itself shards CPU tensors over gloo, so the only change is to
  keep the plugin (`_allow_fsdp_on_cpu`).
"""

import os
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _allow_fsdp_on_cpu() -> None:
    import accelerate.state
    from accelerate.utils import DistributedType

    original = accelerate.state.AcceleratorState.__init__

    def __init__(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            accelerate.state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    accelerate.state.AcceleratorState.__init__ = __init__


def _trained_weights(trainer) -> dict:
    """Every weight of the trained model, whole, as this process sees it (all processes must call this)."""
    import torch

    model = trainer.accelerator.unwrap_model(trainer.model)
    if trainer.is_deepspeed_enabled:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters())):
            return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    state = {}
    for key, value in model.state_dict().items():
        if isinstance(value, torch.distributed.tensor.DTensor):  # an FSDP2 shard
            value = value.full_tensor()
        state[key] = value.detach().clone().contiguous()
    return state


def _log_writes(output_dir: str, log_path: Path) -> None:
    watched = os.path.realpath(output_dir) + os.sep
    # Opened before the hook (its own writes are not logged) and open until the process ends.
    log = open(log_path, "a", buffering=1)  # noqa: SIM115

    def hook(event, args):
        if event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & (os.O_WRONLY | os.O_RDWR))
        if writing:
            path = os.path.realpath(os.fsdecode(path))
            if path.startswith(watched):
                log.write(path[len(watched) :] + "\n")

    sys.addaudithook(hook)


def main() -> None:
    from safetensors.torch import save_file

    import llava_hf.training

    probe_dir = Path(os.environ["LLAVA_HF_PROBE_DIR"])
    if os.environ.get("LLAVA_HF_PROBE_FSDP_ON_CPU") == "1":
        _allow_fsdp_on_cpu()
    save_stage_output = llava_hf.training.save_stage_output

    def probed_save_stage_output(trainer, *args, **kwargs):
        rank = trainer.args.process_index
        save_file(_trained_weights(trainer), probe_dir / f"trained-rank{rank}.safetensors")
        _log_writes(trainer.args.output_dir, probe_dir / f"writes-rank{rank}.txt")
        return save_stage_output(trainer, *args, **kwargs)

    # recipes/sft.py imports it from llava_hf.training inside main(), so it gets this one.
    llava_hf.training.save_stage_output = probed_save_stage_output
    sys.argv = [str(ROOT / "recipes" / "sft.py"), *sys.argv[1:]]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
