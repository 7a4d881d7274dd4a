"""Push checkpoints, datasets and Spaces to the Hub, each in one commit with its card.

Authentication is `huggingface_hub`'s own: the `HF_TOKEN` environment variable or the token `hf auth login` saved.
No function here takes, prints, logs or writes a token; the endpoint is `HF_ENDPOINT` (the Hub by default).
"""

import fnmatch
import json
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..utils import validate_hub_id
from .dataset_card import prompt_types as count_prompt_types
from .dataset_card import render_dataset_card
from .model_card import read_config, render_model_card, safetensors_shapes
from .rendering import CardError, validate_card
from .space_card import render_space_app, render_space_readme

logger = logging.getLogger(__name__)

REMOTE_CODE = ("configuration_llava.py", "modeling_llava.py", "processing_llava.py")
# Trainer leftovers and caches: never part of a published checkpoint.
MODEL_IGNORE = [
    "checkpoint-*",
    "runs",
    "adapter",
    "__pycache__",
    ".git",
    ".cache",
    "README.md",  # replaced by the rendered card
    "optimizer.pt",
    "scheduler.pt",
    "rng_state*.pth",
    "trainer_state.json",
    "training_args.bin",
]
SPACE_IGNORE = ["__pycache__", "*.pyc", ".git", ".gradio", "flagged"]


class HubPushError(ValueError):
    """A push that cannot happen (no login, a refused request); the message says what to do."""


@dataclass
class PushResult:
    repo_id: str
    repo_type: str
    revision: str
    commit_url: str
    files: list[str]

    @property
    def url(self) -> str:
        return self.commit_url.split("/commit/")[0]


def _api():
    from huggingface_hub import HfApi

    return HfApi(library_name="llava-hf")


def _hub_call(what: str, function, *args: Any, **kwargs: Any):
    """Run a Hub call; its HTTP errors become `HubPushError` saying what failed (the client never puts the token in
    its messages)."""
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    try:
        return function(*args, **kwargs)
    except LocalTokenNotFoundError as error:
        raise HubPushError(f"{what}: not logged in; set HF_TOKEN or run `hf auth login`.") from error
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        hint = {
            401: " (the token from HF_TOKEN or `hf auth login` was refused)",
            403: " (the token cannot write there)",
        }
        raise HubPushError(f"{what} failed with HTTP {status}{hint.get(status, '')}: {error}") from error


def _files(folder: Path, ignore: list[str]) -> list[Path]:
    """Files under `folder`, skipping any path with a part that matches an `ignore` pattern."""
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not any(fnmatch.fnmatch(part, p) for part in relative.parts for p in ignore):
            files.append(path)
    return files


def check_repo_id(repo_id: str) -> str:
    """`namespace/name` or a bare `name` (the login's namespace), by `huggingface_hub`'s rules; checked before
    anything is read or rendered, so that `--dry-run` fails where the push would."""
    try:
        validate_hub_id(repo_id, allow_bare_name=True)
    except ValueError as error:
        raise ValueError(f"{repo_id!r} is not a Hub repo id: {error} Use namespace/name or name.") from error
    return repo_id


def _prepare_repo(api, repo_id: str, repo_type: str, private: bool, branch: str | None, **create: Any) -> str:
    """Create the repo (and branch) when missing; returns the full `namespace/name` id."""
    user = _hub_call("checking the Hub login", api.whoami)
    url = _hub_call(
        f"creating {repo_type} repo {repo_id}",
        api.create_repo,
        repo_id,
        repo_type=repo_type,
        private=private,
        exist_ok=True,
        **create,
    )
    repo_id = url.repo_id or (repo_id if "/" in repo_id else f"{user['name']}/{repo_id}")
    if private:
        info = _hub_call(f"reading {repo_id}", api.repo_info, repo_id, repo_type=repo_type)
        if not info.private:
            logger.warning("%s already exists and is public; --private does not change an existing repo.", repo_id)
    if branch and branch != "main":
        _hub_call(
            f"creating branch {branch!r} of {repo_id}",
            api.create_branch,
            repo_id,
            branch=branch,
            repo_type=repo_type,
            exist_ok=True,
        )
    return repo_id


def _commit(api, repo_id: str, repo_type: str, operations: list, branch: str | None, message: str) -> str:
    info = _hub_call(
        f"committing to {repo_id}",
        api.create_commit,
        repo_id,
        operations=operations,
        repo_type=repo_type,
        revision=branch,
        commit_message=message,
    )
    return info.commit_url


# -- models ---------------------------------------------------------------------------------------------------------
def check_model_folder(model_dir: str | Path) -> Path:
    """A pushable llava_hf checkpoint: config, weights, processor and remote code; raises naming what is missing."""
    model_dir = Path(model_dir)
    if model_dir.is_file():
        raise CardError(f"{model_dir} is a file; give the checkpoint folder that holds it.")
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model folder {model_dir} not found.")
    config = read_config(model_dir)
    if not (list(model_dir.glob("*.safetensors")) or (model_dir / "model.safetensors.index.json").is_file()):
        if (model_dir / "adapter").is_dir():
            raise CardError(
                f"{model_dir} holds only a LoRA adapter (merge_lora was false); merge it into a full checkpoint first."
            )
        raise CardError(f"{model_dir} has no safetensors weights.")
    if not ((model_dir / "processor_config.json").is_file() or (model_dir / "preprocessor_config.json").is_file()):
        raise CardError(f"{model_dir} has no processor (processor_config.json); save the processor with the model.")
    check_weights(model_dir)
    missing = [name for name in REMOTE_CODE if not (model_dir / name).is_file()]
    if missing or "auto_map" not in config:
        raise CardError(
            f"{model_dir} lacks the remote code ({', '.join(missing) or 'auto_map in config.json'}), so it would not "
            "load with trust_remote_code; re-save it with llava_hf imported (model.save_pretrained)."
        )
    return model_dir


def check_weights(model_dir: Path) -> None:
    """The weights hold what the config describes: every file readable, and the checkpoint loadable as
    `from_pretrained` loads it (on the meta device: nothing is allocated; transformers' own key renaming and ignore
    rules apply), with no weight missing and no shape mismatched. Raises `CardError` naming the first problems, so
    that a checkpoint that would not load is never pushed; keys the model does not use are logged."""
    from ..modeling_llava import LlavaForConditionalGeneration

    safetensors_shapes(model_dir)  # every file readable, named when it is not
    try:
        # eager: the check must not depend on which attention kernels are installed.
        _, info = LlavaForConditionalGeneration.from_pretrained(
            model_dir,
            device_map="meta",
            attn_implementation="eager",
            ignore_mismatched_sizes=True,  # reported below, with the others, rather than raised one by one
            output_loading_info=True,
        )
    except Exception as error:  # a config the model cannot be built from, or shapes it refuses: it would not load
        raise CardError(
            f"{model_dir}: the checkpoint does not load ({type(error).__name__}: {error}); save the model and its "
            "config together (model.save_pretrained)."
        ) from error
    problems = [f"{name}: missing from the weights" for name in sorted(info.get("missing_keys", []))]
    problems += [
        f"{name}: {list(saved)} in the file, {list(built)} in the config"
        for name, saved, built in info.get("mismatched_keys", [])
    ]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CardError(
            f"{model_dir}: the weights do not match config.json: {'; '.join(map(str, problems[:5]))}{more}; save the "
            "model and its config together (model.save_pretrained)."
        )
    if info.get("unexpected_keys"):
        logger.warning("%s: weights the model does not use: %s", model_dir, sorted(info["unexpected_keys"])[:5])


def push_model(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    branch: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
    **card: Any,
) -> PushResult | str:
    """Push a checkpoint (weights, processor, remote code, training record) and its model card in one commit.

    `card` goes to `render_model_card` (`base_models`, `datasets`, `license`, `tags`, `eval_results`, `language`,
    `template`). With `dry_run`, nothing is sent: the rendered card is returned.
    """
    from huggingface_hub import CommitOperationAdd

    check_repo_id(repo_id)
    model_dir = check_model_folder(model_dir)
    readme = render_model_card(model_dir, repo_id, **card)
    if dry_run:
        return readme
    files = _files(model_dir, MODEL_IGNORE)
    api = _api()
    full_id = _prepare_repo(api, repo_id, "model", private, branch)
    if full_id != repo_id:  # a bare name went to the user's namespace: the card's usage must say where
        readme, repo_id = render_model_card(model_dir, full_id, **card), full_id
    operations = [CommitOperationAdd(str(p.relative_to(model_dir)), str(p)) for p in files]
    operations.append(CommitOperationAdd("README.md", readme.encode()))
    message = commit_message or f"Upload {model_dir.name} with llava-hf"
    url = _commit(api, repo_id, "model", operations, branch, message)
    logger.info("pushed %d files of %s to %s", len(operations), model_dir, url)
    return PushResult(repo_id, "model", branch or "main", url, [op.path_in_repo for op in operations])


# -- datasets -------------------------------------------------------------------------------------------------------
def parse_sources(sources: list[str]) -> dict[str, list[Path]]:
    """`[SPLIT=]PATH` arguments -> `{split: [paths]}` (default split `train`), in order."""
    splits: dict[str, list[Path]] = {}
    for source in sources:
        split, _, path = source.rpartition("=") if "=" in source else ("train", "", source)
        if not split.replace("-", "_").isidentifier():
            raise ValueError(f"{source!r}: split name {split!r} must be letters, digits, '_' or '-'.")
        if not Path(path).exists():
            raise FileNotFoundError(f"{source!r}: {path} not found.")
        splits.setdefault(split, []).append(Path(path))
    if not splits:
        raise ValueError("no data given: pass LLaVA JSON/JSONL files or datasets folders, as [SPLIT=]PATH.")
    return splits


def _load_split(paths: list[Path], image_root: str | None, stage: str, skip_bad: bool):
    """A split from LLaVA JSON/JSONL files or `save_to_disk` folders (not mixed)."""
    from datasets import concatenate_datasets, load_from_disk

    from ..data import load_llava_dataset

    folders = [p for p in paths if p.is_dir()]
    if folders and len(folders) != len(paths):
        raise ValueError(f"{[str(p) for p in paths]}: mix of folders and files in one split; use one kind.")
    if folders:
        parts = []
        for folder in folders:
            loaded = load_from_disk(str(folder))
            if hasattr(loaded, "keys"):  # a DatasetDict: the caller names splits itself
                raise ValueError(f"{folder} is a DatasetDict; pass each split's folder as SPLIT={folder}/<split>.")
            parts.append(loaded)
        return concatenate_datasets(parts), f"{len(parts)} datasets folder(s)"
    dataset, report = load_llava_dataset(
        [str(p) for p in paths],
        image_root,
        stage=stage,
        on_error="skip" if skip_bad else "raise",
        progress=False,
        check_image_files=True,  # the Parquet embeds each image: a missing one is named by its record, not its path
    )
    return dataset, report.summary()


def _write_parquet(dataset, folder: Path, path_prefix: str, max_shard_bytes: int) -> list[str]:
    """Parquet shards with the images' bytes embedded (as `datasets.push_to_hub` writes them)."""
    from datasets.table import embed_table_storage

    num_shards = max(1, math.ceil(dataset._estimate_nbytes() / max_shard_bytes)) if len(dataset) else 1
    names = []
    for index in range(num_shards):
        shard = dataset.shard(num_shards=num_shards, index=index, contiguous=True).with_format("arrow")
        shard = shard.map(embed_table_storage, batched=True, keep_in_memory=True)
        name = f"{path_prefix}-{index:05d}-of-{num_shards:05d}.parquet"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shard.to_parquet(str(folder / name))
        names.append(name)
    return names


def _shapes_world(path: Path) -> bool:
    return (path.parent / "annotations" / "caps_boxes.jsonl").is_file() and (
        (path.parent / "README.md").is_file() and "shapes world" in (path.parent / "README.md").read_text()
    )


def push_dataset(
    sources: list[str],
    repo_id: str,
    *,
    image_root: str | None = None,
    stage: str = "chat",
    config_name: str = "default",
    license: str = "other",
    source: str | None = None,
    engine: str | None = None,
    llm: str | None = None,
    prompt_types: str | None = None,
    tags: list[str] | None = None,
    language: list[str] | None = None,
    private: bool = False,
    branch: str | None = None,
    commit_message: str | None = None,
    skip_bad: bool = False,
    max_shard_bytes: int = 500 * 1024 * 1024,
    dry_run: bool = False,
) -> PushResult | str:
    """Push LLaVA JSON/JSONL files (with their images) or datasets folders as a Hub dataset `config_name`.

    Each split becomes Parquet shards under `data/<config>/` with the images embedded, so
    `datasets.load_dataset(repo_id, config_name)` needs nothing else; the card lists every config of the repo (the
    other configs already pushed are kept). With `dry_run` nothing is sent: the rendered card is returned.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, DatasetCard

    check_repo_id(repo_id)
    if not config_name.replace("-", "_").isidentifier():
        raise ValueError(f"config name {config_name!r} must be letters, digits, '_' or '-'.")
    split_paths = parse_sources(sources)
    all_paths = [p for paths in split_paths.values() for p in paths]
    with tempfile.TemporaryDirectory(prefix="llava-hf-push-") as tmp:
        staging, splits, summaries, metadata_column = Path(tmp), {}, [], []
        for split, paths in split_paths.items():
            dataset, summary = _load_split(paths, image_root, stage, skip_bad)
            if len(dataset) == 0:
                raise ValueError(f"split {split!r} ({', '.join(map(str, paths))}) has no rows.")
            names = _write_parquet(dataset, staging, f"data/{config_name}/{split}", max_shard_bytes)
            size = sum((staging / n).stat().st_size for n in names)
            splits[split] = {"rows": len(dataset), "bytes": size, "files": names}
            summaries.append(f"{split}: {summary}")
            if "metadata" in dataset.column_names:
                metadata_column += dataset["metadata"]
        shapes = all(p.is_file() and _shapes_world(p) for p in all_paths)
        generation = {
            "source": source
            or (
                "the llava-hf synthetic shapes world: seeded renders of coloured shapes, no third-party images"
                if shapes
                else "not recorded (`--source`)"
            ),
            "engine": engine or ("`llava-hf data shapes` (templated text, no LLM)" if shapes else "not recorded"),
            "llm": llm or ("none" if shapes else "not recorded (`--llm`)"),
            "prompt_types": prompt_types or count_prompt_types(metadata_column),
            "conversion": f"`llava-hf push-dataset` from {', '.join(p.name for p in all_paths)}; "
            + "; ".join(summaries),
        }
        api = None if dry_run else _api()
        previous: dict[str, Any] = {}
        if not dry_run:
            repo_id = _prepare_repo(api, repo_id, "dataset", private, branch)
            if api.file_exists(repo_id, "README.md", repo_type="dataset", revision=branch):
                from huggingface_hub import hf_hub_download

                path = hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=branch)
                previous = DatasetCard.load(path).data.to_dict()
        readme = render_dataset_card(
            repo_id,
            config_name,
            splits,
            license=license,
            generation=generation,
            tags=tags,
            language=language,
            previous=previous,
        )
        if dry_run:
            return readme
        operations: list = []
        folder = f"data/{config_name}"
        # A re-push replaces the config's shards (their count may differ), in the same commit.
        existing = _hub_call(f"listing {repo_id}", api.list_repo_files, repo_id, repo_type="dataset", revision=branch)
        if any(f.startswith(folder + "/") for f in existing):
            operations.append(CommitOperationDelete(folder + "/", is_folder=True))
        for split in splits.values():
            operations += [CommitOperationAdd(name, str(staging / name)) for name in split["files"]]
        operations.append(CommitOperationAdd("README.md", readme.encode()))
        message = commit_message or f"Upload config {config_name!r} with llava-hf"
        url = _commit(api, repo_id, "dataset", operations, branch, message)
    files = [op.path_in_repo for op in operations if isinstance(op, CommitOperationAdd)]
    logger.info("pushed %s (%s) to %s", config_name, ", ".join(splits), url)
    return PushResult(repo_id, "dataset", branch or "main", url, files)


# -- Spaces ---------------------------------------------------------------------------------------------------------
def _requirements(extra: list[str]) -> list[str]:
    """llava-hf's own dependencies (the package is vendored into the Space, not installed), timm for timm towers,
    then `extra`. gradio is not listed: the Space's `sdk_version` installs it."""
    from importlib import metadata

    try:
        requires = [r.split(";")[0].strip() for r in metadata.requires("llava-hf") or [] if "extra ==" not in r]
    except metadata.PackageNotFoundError:
        requires = []
    requires = requires or ["torch>=2.4", "torchvision>=0.19", "transformers>=5.24", "huggingface_hub>=1.0"]
    requires = requires + ["timm>=1.0"] + list(extra)
    return list(dict.fromkeys(r for r in requires if r))


def create_space(
    space_dir: str | Path,
    model: str,
    *,
    title: str | None = None,
    datasets: list[str] | None = None,
    license: str = "other",
    hardware: str | None = None,
    requirements: list[str] | None = None,
    demo_config: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a Gradio Space folder for `model` (a Hub id): `app.py`, `requirements.txt`, `README.md` (front matter
    `sdk: gradio`, `app_file`, `models`), `demo_config.json`, example images, and the `llava_hf` package itself, so
    the Space runs exactly the code of `llava-hf demo`."""
    for option, name in [("--model", model)] + [("--dataset", dataset) for dataset in datasets or []]:
        try:  # the README's front matter lists them: a Space that names no real repo is refused before writing
            validate_hub_id(name, allow_bare_name=option == "--model")
        except ValueError as error:
            raise ValueError(f"{option} {name!r} is not a Hub repo id: {error}") from error
    space_dir = Path(space_dir)
    if space_dir.exists() and any(space_dir.iterdir()) and not overwrite:
        raise ValueError(f"{space_dir} exists and is not empty; pass --overwrite to replace its files.")
    import gradio

    from ..demo.app import DemoConfig
    from ..demo.examples import write_example_images

    space_dir.mkdir(parents=True, exist_ok=True)
    config = DemoConfig.from_dict({**(demo_config or {}), "model": model})
    config.title = title or config.title or f"{model.split('/')[-1]} (llava-hf)"
    images = write_example_images(space_dir / "examples")
    config.examples = [{"text": e["text"], "image": str(Path("examples") / Path(e["image"]).name)} for e in images]
    (space_dir / "demo_config.json").write_text(json.dumps(config.to_dict(), indent=1) + "\n")
    (space_dir / "app.py").write_text(render_space_app(model))
    (space_dir / "requirements.txt").write_text("\n".join(_requirements(list(requirements or []))) + "\n")
    readme = render_space_readme(
        model,
        config.title,
        config.limits.to_dict(),
        sdk_version=gradio.__version__,
        datasets=datasets,
        license=license,
        hardware=hardware,
    )
    (space_dir / "README.md").write_text(readme)
    package = Path(__file__).resolve().parents[1]
    target = space_dir / "llava_hf"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    logger.info("wrote the Space for %s to %s", model, space_dir)
    return space_dir


def check_space_folder(space_dir: str | Path) -> Path:
    """A pushable Gradio Space folder: README front matter (validated with `SpaceCard`) and its `app_file`."""
    space_dir = Path(space_dir)
    if not space_dir.is_dir():
        raise FileNotFoundError(f"Space folder {space_dir} not found; write it with `llava-hf space create`.")
    readme = space_dir / "README.md"
    if not readme.is_file():
        raise FileNotFoundError(f"{space_dir} has no README.md; write the folder with `llava-hf space create`.")
    try:
        card = validate_card(readme.read_text(), "space")
    except CardError as error:
        raise CardError(f"{readme}: {error}") from error
    if card.data.sdk != "gradio":
        raise CardError(f"{readme}: sdk is {card.data.sdk!r}; llava-hf Spaces are gradio Spaces.")
    if not (space_dir / card.data.app_file).is_file():
        raise FileNotFoundError(f"{readme} names app_file {card.data.app_file!r}, which is not in {space_dir}.")
    return space_dir


def push_space(
    space_dir: str | Path,
    space_id: str,
    *,
    private: bool = False,
    branch: str | None = None,
    commit_message: str | None = None,
) -> PushResult:
    """Push a Space folder written by `create_space` (one commit; the Space repo is created with `sdk: gradio`)."""
    from huggingface_hub import CommitOperationAdd

    check_repo_id(space_id)
    space_dir = check_space_folder(space_dir)
    api = _api()
    space_id = _prepare_repo(api, space_id, "space", private, branch, space_sdk="gradio")
    operations = [CommitOperationAdd(str(p.relative_to(space_dir)), str(p)) for p in _files(space_dir, SPACE_IGNORE)]
    url = _commit(api, space_id, "space", operations, branch, commit_message or "Upload the llava-hf demo")
    return PushResult(space_id, "space", branch or "main", url, [op.path_in_repo for op in operations])
