"""Push/pull round trips with the real huggingface_hub client against a Hub-compatible server on loopback
(`fixtures/hub_server.py`): a tiny checkpoint trained and pushed by `recipes/sft.py`, `llava-hf push` to a private
branch with evaluation results, `llava-hf push-dataset`, `llava-hf space create|push` and the Space's app.py, all
loaded back with `AutoModelForImageTextToText`, `pipeline`, `datasets.load_dataset` and `ModelCard.load` in fresh
processes where `llava_hf` cannot be imported. huggingface_hub reads `HF_ENDPOINT` at import, so the clients run in
subprocesses with `HF_ENDPOINT`, `HF_HUB_DISABLE_XET=1` and a temporary `HF_HOME`; the calls that gain nothing from
a fresh process (a second dataset config, the Space, the error paths) run `llava-hf` here with those constants
patched."""

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from fixtures.hub_server import HubServer
from fixtures.recipes import launch_command, write_recipe
from llava_hf.data.shapes import build_shapes_world

TOKEN = "hf_llavaHfTestToken0123456789abcdefXYZ"
USER = "tester"
ROOT = Path(__file__).resolve().parents[2]
PROMPT = "<image>\nWhat is it?"


def hub_env(hub: HubServer, home: Path, token: str | None = TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env |= {
        "HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(home),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    if token:
        env["HF_TOKEN"] = token
    return env


def run(command: list[str], env: dict[str, str], outputs: list[str], check: bool = True, **kwargs):
    """Run a client; keep its output for the token check."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT, **kwargs)
    outputs += [result.stdout, result.stderr]
    if check:
        shown = " ".join(c if len(c) < 200 else "<script>" for c in command)
        assert result.returncode == 0, f"{shown}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "llava_hf.cli", *args]


@contextlib.contextmanager
def client_in_process(hub: HubServer, home: Path, token: str | None = TOKEN):
    """This process's huggingface_hub pointed at `hub`: it read HF_ENDPOINT, HF_HUB_OFFLINE (conftest sets it),
    HF_HUB_DISABLE_XET and HF_HOME at import, so the constants it reads at call time are patched instead."""
    from huggingface_hub import constants

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "ENDPOINT", hub.url)
        patch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        patch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        patch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
        patch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
        patch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
        patch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if token:
            patch.setenv("HF_TOKEN", token)
        else:
            patch.delenv("HF_TOKEN", raising=False)
        yield


def run_main(args: list[str], outputs: list[str]) -> int:
    """`llava-hf ARGS` in this process; its stdout, stderr and every log record (DEBUG up) go to `outputs`."""
    from llava_hf.cli import main

    out, err, logs = io.StringIO(), io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(logs)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    outputs += [out.getvalue(), err.getvalue(), logs.getvalue()]
    return code


@pytest.fixture(scope="module")
def hub():
    with HubServer({TOKEN: USER}) as server:
        yield server


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from fixtures.backbones import save_backbones

    path = tmp_path_factory.mktemp("hub")
    save_backbones(path)
    build_shapes_world(path / "world", num_images=12, seed=0, progress=False)
    return path


@pytest.fixture(scope="module")
def outputs() -> list[str]:
    """Everything the clients printed."""
    return []


@pytest.fixture(scope="module")
def trained(hub, workspace, outputs):
    """A 2-step stage-1 run of recipes/sft.py that pushes its checkpoint at the end (`push_to_hub: true`)."""
    recipe = write_recipe(workspace, "stage1", push_to_hub=True, hub_model_id=f"{USER}/tiny-llava-sft")
    run(launch_command(recipe), hub_env(hub, workspace / "hf-home-train"), outputs)
    return workspace / "stage1"


@pytest.fixture(scope="module")
def results(workspace) -> Path:
    from llava_hf.eval.results import make_results, write_results

    metrics = {"accuracy": 41.67, "blind_accuracy": 25.0, "gap": 16.67, "count": 12}
    data = {"questions": workspace / "world" / "mcq_test.json"}
    return write_results(make_results("shapes", "stage1", data, {"max_new_tokens": 8}, metrics), workspace / "r.json")


@pytest.fixture(scope="module")
def pushed(hub, trained, results, workspace, outputs):
    """`llava-hf push` of the trained folder to a private repo's branch, with evaluation results."""
    command = cli("push", str(trained), f"{USER}/tiny-llava", "--private", "--branch", "eval")
    command += ["--commit-message", "tiny llava with results", "--eval-results", str(results), "--license", "mit"]
    command += ["--base-model", "openai/clip-vit-base-patch32", "--base-model", "HuggingFaceTB/SmolLM2-135M"]
    command += ["--dataset", f"{USER}/tiny-shapes"]
    result = run(command, hub_env(hub, workspace / "hf-home-push"), outputs)
    return result.stdout


@pytest.fixture(scope="module")
def dataset_pushed(hub, workspace, outputs):
    world = workspace / "world"
    command = cli("push-dataset", f"train={world / 'mcq_train.json'}", f"test={world / 'mcq_test.json'}")
    command += [f"{USER}/tiny-shapes", "--image-root", str(world / "images"), "--config-name", "mcq"]
    command += ["--license", "cc0-1.0"]
    run(command, hub_env(hub, workspace / "hf-home-data"), outputs)
    # A second config in the same repo (in this process): the card must keep the first.
    command = ["push-dataset", str(world / "instruct.json"), f"{USER}/tiny-shapes", "--image-root"]
    command += [str(world / "images"), "--license", "cc0-1.0"]
    with client_in_process(hub, workspace / "hf-home-data2"):
        assert run_main(command, outputs) == 0, outputs[-2:]
    return world


LOADER = textwrap.dedent(
    """
    import importlib.abc, io, json, sys

    class BlockLlavaHf(importlib.abc.MetaPathFinder):  # a Hub user without llava-hf installed
        def find_spec(self, name, path, target=None):
            if name == "llava_hf" or name.startswith("llava_hf."):
                raise ImportError("llava_hf is blocked in this process")

    sys.meta_path.insert(0, BlockLlavaHf())
    import torch
    from datasets import load_dataset
    from huggingface_hub import DatasetCard, ModelCard, hf_hub_download
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

    spec = json.loads(sys.argv[1])
    repo, revision = spec["model"], spec["revision"]
    image = Image.open(spec["image"]).convert("RGB")  # noqa
    model = AutoModelForImageTextToText.from_pretrained(repo, revision=revision, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(repo, revision=revision, trust_remote_code=True)
    inputs = processor(images=[image], text=spec["prompt"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
    pipe = pipeline("image-text-to-text", model=repo, revision=revision, trust_remote_code=True)
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Hi"}]}]
    answer = pipe(text=messages, max_new_tokens=4, generate_kwargs={"do_sample": False}, return_full_text=False)
    card = ModelCard.load(hf_hub_download(repo, "README.md", revision=revision))
    data = {}
    for config in spec["configs"]:
        dataset = load_dataset(spec["dataset"], config)
        data[config] = {
            split: {
                "rows": len(rows),
                "ids": list(rows["id"]),
                "messages": rows[0]["messages"],
                "image_png": rows[0]["images"][0].tobytes().hex()[:2000],
                "image_size": list(rows[0]["images"][0].size),
            }
            for split, rows in dataset.items()
        }
    dataset_card = DatasetCard.load(spec["dataset"]).data.to_dict()
    assert "llava_hf" not in sys.modules
    print(json.dumps({
        "model_module": type(model).__module__,
        "logits": logits.tolist(),
        "pipeline": answer[0]["generated_text"],
        "card": card.data.to_dict(),
        "card_text": card.text,
        "datasets": data,
        "dataset_card": dataset_card,
    }))
    """
)


@pytest.fixture(scope="module")
def loaded(hub, pushed, dataset_pushed, workspace, outputs):
    spec = {
        "model": f"{USER}/tiny-llava",
        "revision": "eval",
        "prompt": PROMPT,
        "image": str(next((workspace / "world" / "images").glob("*.png"))),
        "dataset": f"{USER}/tiny-shapes",
        "configs": ["mcq", "default"],
    }
    result = run([sys.executable, "-c", LOADER, json.dumps(spec)], hub_env(hub, workspace / "hf-home-load"), outputs)
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- models ---------------------------------------------------------------------------------------------------------
def test_training_run_pushes_the_checkpoint_with_its_card(hub, trained):
    files = hub.files("model", f"{USER}/tiny-llava-sft")
    for name in ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "chat_template.jinja"):
        assert name in files, name
    for name in ("configuration_llava.py", "modeling_llava.py", "processing_llava.py", "llava_hf_training.json"):
        assert files[name] == (trained / name).read_bytes(), name
    assert files["model.safetensors"] == (trained / "model.safetensors").read_bytes()
    assert "model.safetensors" in hub.lfs_paths("model", f"{USER}/tiny-llava-sft")  # through LFS batch + PUT
    card = files["README.md"].decode()
    assert "pipeline_tag: image-text-to-text" in card and "| learning rate | 0.001 |" in card
    assert "| data | `stage1.json` |" in card and "| length | 2 of 2 optimizer steps |" in card


def test_push_goes_to_a_private_branch_in_one_commit(hub, pushed):
    assert f"{hub.url}/{USER}/tiny-llava" in pushed
    repo = hub.state.repos[("model", f"{USER}/tiny-llava")]
    assert repo.private and set(repo.branches) == {"main", "eval"}
    head = repo.commits[repo.branches["eval"]]
    assert head.title == "tiny llava with results" and head.parent == repo.branches["main"]
    assert "README.md" in head.files and "README.md" not in repo.commits[repo.branches["main"]].files
    # Private: without the token the repo does not exist; with it, it does.
    url = f"{hub.url}/api/models/{USER}/tiny-llava/revision/eval"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url)
    assert refused.value.code == 401
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert json.loads(urllib.request.urlopen(request).read())["private"] is True


def test_pushed_model_loads_with_plain_transformers(loaded, trained):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    assert loaded["model_module"].startswith("transformers_modules.")  # the remote code from the repo ran
    model = AutoModelForImageTextToText.from_pretrained(trained).eval()
    processor = AutoProcessor.from_pretrained(trained)
    image = Image.open(next((trained.parent / "world" / "images").glob("*.png"))).convert("RGB")
    with torch.no_grad():
        expected = model(**processor(images=[image], text=PROMPT, return_tensors="pt")).logits[0, -1]
    torch.testing.assert_close(torch.tensor(loaded["logits"]), expected, rtol=1e-5, atol=1e-5)
    assert isinstance(loaded["pipeline"], str)


def test_pushed_card_metadata_reads_back(loaded, results):
    card = loaded["card"]
    assert card["pipeline_tag"] == "image-text-to-text" and card["library_name"] == "transformers"
    assert card["base_model"] == ["openai/clip-vit-base-patch32", "HuggingFaceTB/SmolLM2-135M"]
    assert card["datasets"] == [f"{USER}/tiny-shapes"] and card["license"] == "mit"
    metrics = card["model-index"][0]["results"][0]["metrics"]
    assert [(m["name"], m["value"]) for m in metrics] == [("Accuracy", 41.67), ("Accuracy, blank image", 25.0)]
    assert "| llava-hf shapes world (held-out MCQ) | Accuracy | 41.67 |" in loaded["card_text"]


# -- datasets -------------------------------------------------------------------------------------------------------
def test_pushed_dataset_loads_with_load_dataset(loaded, dataset_pushed):
    from llava_hf.data import load_llava_dataset

    for config, files in (("mcq", {"train": "mcq_train.json", "test": "mcq_test.json"}), ("default", None)):
        files = files or {"train": "instruct.json"}
        assert set(loaded["datasets"][config]) == set(files)
        for split, name in files.items():
            local, _ = load_llava_dataset(dataset_pushed / name, dataset_pushed / "images", progress=False)
            remote = loaded["datasets"][config][split]
            assert remote["rows"] == len(local) and remote["ids"] == list(local["id"])
            assert remote["messages"] == local[0]["messages"]
            original = Image.open(dataset_pushed / "images" / local[0]["image_files"][0]).convert("RGB")
            assert remote["image_size"] == list(original.size)
            assert remote["image_png"] == original.tobytes().hex()[:2000]  # the pixels, embedded in Parquet


def test_dataset_card_lists_both_configs(loaded, hub):
    card = loaded["dataset_card"]
    assert [c["config_name"] for c in card["configs"]] == ["default", "mcq"]
    assert card["license"] == "cc0-1.0" and "image-text-to-text" in card["task_categories"]
    readme = hub.files("dataset", f"{USER}/tiny-shapes")["README.md"].decode()
    assert "| engine | `llava-hf data shapes` (templated text, no LLM) |" in readme
    assert "`conv` (" in readme  # prompt types counted from the records (conversation / detail / complex)


# -- Spaces ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def space(hub, trained, workspace, outputs):
    folder = workspace / "space"
    create = ["space", "create", str(folder), "--model", f"{USER}/tiny-llava-sft", "--dataset", f"{USER}/tiny-shapes"]
    with client_in_process(hub, workspace / "hf-home-space"):
        assert run_main([*create, "--max-new-tokens", "12"], outputs) == 0, outputs[-2:]
        assert run_main(["space", "push", str(folder), f"{USER}/tiny-llava-demo"], outputs) == 0, outputs[-2:]
    return folder


def test_space_folder_is_pushed_with_gradio_front_matter(hub, space):
    from huggingface_hub import SpaceCard

    files = hub.files("space", f"{USER}/tiny-llava-demo")
    for name in ("app.py", "requirements.txt", "demo_config.json", "llava_hf/demo/app.py", "examples/shapes-7-3.png"):
        assert name in files, name
    assert not any("__pycache__" in name for name in files)
    card = SpaceCard(files["README.md"].decode()).data
    assert (card.sdk, card.app_file, card.models) == ("gradio", "app.py", [f"{USER}/tiny-llava-sft"])
    requirements = files["requirements.txt"].decode().splitlines()
    assert any(r.startswith("transformers") for r in requirements) and "timm>=1.0" in requirements
    assert hub.state.repos[("space", f"{USER}/tiny-llava-demo")].sdk == "gradio"


def test_space_app_serves_the_pushed_model(hub, space, trained, workspace, outputs, tmp_path):
    """The Space as the Hub would run it: its files in a folder, `python app.py`, the model from the Hub."""
    from fixtures.servers import expected_answer, free_port, start_server, stop_server

    checkout = tmp_path / "space-checkout"
    for name, content in hub.files("space", f"{USER}/tiny-llava-demo").items():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_bytes(content)
    port = free_port()
    env = hub_env(hub, workspace / "hf-home-app") | {"GRADIO_SERVER_PORT": str(port)}
    env["GRADIO_SERVER_NAME"] = "127.0.0.1"
    log = tmp_path / "app.log"
    url = f"http://127.0.0.1:{port}/"
    process = start_server([sys.executable, "app.py"], url, log, env, cwd=checkout)
    try:
        from gradio_client import Client, handle_file

        image = checkout / "examples" / "shapes-7-3.png"
        message = {"text": "What shapes are in this image?", "files": [handle_file(str(image))]}
        answer = Client(url, verbose=False).predict(message, 12, False, 0.2, 0.9, api_name="/chat")
    finally:
        stop_server(process)
        outputs.append(log.read_text())
    assert answer == expected_answer(trained, image, "What shapes are in this image?", max_new_tokens=12)
    # `python app.py` imports the package vendored next to it, not an installed llava-hf.
    probe = "import importlib.util; print(importlib.util.find_spec('llava_hf').origin)"
    origin = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=checkout, check=True)
    assert Path(origin.stdout.strip()) == checkout / "llava_hf" / "__init__.py"


# -- tokens ---------------------------------------------------------------------------------------------------------
def test_a_missing_or_refused_token_fails_clearly(hub, trained, tmp_path):
    errors: list[str] = []
    with client_in_process(hub, tmp_path / "no-login", token=None):
        assert run_main(["push", str(trained), f"{USER}/x"], errors) == 1
    assert "not logged in; set HF_TOKEN or run `hf auth login`" in errors[1]
    with client_in_process(hub, tmp_path / "wrong", token="hf_wrong"):
        assert run_main(["push", str(trained), f"{USER}/x"], errors) == 1
    assert "HTTP 401" in errors[4] and "hf_wrong" not in "".join(errors)
    assert ("model", f"{USER}/x") not in hub.state.repos


def test_the_token_is_never_written(hub, trained, pushed, dataset_pushed, loaded, space, workspace, outputs):
    """The clients authenticated with the token, and it appears in no file they wrote, no output, no pushed file."""
    assert any(r["user"] == USER for r in hub.state.requests if r["path"].endswith("/commit/main"))
    assert all(r["user"] == USER for r in hub.state.requests if "/commit/" in r["path"])
    needle = TOKEN.encode()
    leaks = [str(p) for p in workspace.rglob("*") if p.is_file() and needle in p.read_bytes()]
    for (repo_type, repo_id), repo in hub.state.repos.items():
        for commit in repo.commits.values():
            for name in commit.files:
                content = hub.files(repo_type, repo_id, commit.oid)[name]
                if needle in content:
                    leaks.append(f"{repo_type}:{repo_id}/{name}")
    leaks += [f"output {i}" for i, text in enumerate(outputs) if TOKEN in text]
    assert not leaks, f"the token was written to: {leaks}"


def test_dry_run_prints_the_card_and_sends_nothing(hub, trained, tmp_path):
    before, printed = len(hub.state.requests), []
    with client_in_process(hub, tmp_path):
        assert run_main(["push", str(trained), f"{USER}/dry", "--dry-run"], printed) == 0
    assert yaml.safe_load(printed[0].split("---\n")[1])["pipeline_tag"] == "image-text-to-text"
    assert len(hub.state.requests) == before


def test_dataset_errors_name_the_record(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "r1", "image": "x.png", "conversations": [{"from": "human", "value": "hi"}]}]))
    printed: list[str] = []
    assert run_main(["push-dataset", str(bad), f"{USER}/bad", "--dry-run"], printed) == 1
    assert "bad.json" in printed[1] and "'r1'" in printed[1], printed
