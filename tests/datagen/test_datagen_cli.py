"""`llava-hf generate-instructions`: a real SIGKILL mid-run and a restart, and the LLaVA JSON / dataset outputs."""

import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from fixtures.datagen_server import FakeChatServer
from llava_hf.cli import main
from llava_hf.data import load_llava_dataset
from llava_hf.data.shapes import build_shapes_world
from llava_hf.datagen import iter_records, load_instruction_dataset, shapes_contexts
from llava_hf.datagen.store import FAILED, RECORDS, REJECTED

KINDS = ("conversation", "detail", "complex")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("world")
    build_shapes_world(path, num_images=40, seed=0, progress=False)
    return path


def _line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _command(world: Path, out: Path, url: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "llava_hf.cli",
        "generate-instructions",
        "--annotations",
        str(world),
        "--base-url",
        url,
        "--model",
        "test-model",
        "--api-key-env",
        "DATAGEN_KILL_KEY",
        "--out",
        str(out),
        "--concurrency",
        "4",
        "--initial-backoff",
        "0.01",
        "--no-progress",
    ]


def test_a_killed_run_restarts_without_losing_or_duplicating_a_record(world, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    env = os.environ | {"DATAGEN_KILL_KEY": "sk-kill-secret"}
    monkeypatch.setenv("DATAGEN_KILL_KEY", "sk-kill-secret")
    expected = {(f"shapes-0-{i:06d}", kind, 0) for i in range(40) for kind in KINDS}

    # Some 500s and resets on the way, so the kill can also land between a failure and its retry.
    def faults(key: str, attempt: int) -> str | None:
        if attempt > 1:
            return None
        return {0: "500", 1: "reset"}.get(zlib.crc32(key.encode()) % 6)

    with FakeChatServer(latency=0.05, faults=faults) as server:
        command = _command(world, out, server.base_url)
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        while _line_count(out / RECORDS) < 20:  # 20 of 120 records written: the run is well under way
            assert process.poll() is None, f"the run ended before the kill:\n{process.stdout.read()}"
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        first_output = process.communicate()[0]
        assert process.returncode == -signal.SIGKILL
        complete = (out / RECORDS).read_text().rpartition("\n")[0]  # (a kill mid-write would leave a torn tail)
        done_before = {(r["image_id"], r["type"], r["sample_index"]) for r in map(json.loads, complete.splitlines())}
        assert 20 <= len(done_before) < len(expected)
        # A kill inside a write would leave half a line: add one for a key not done yet, as such a kill would.
        torn_key = sorted(expected - done_before)[0]
        torn = json.dumps({"id": "x", "image_id": torn_key[0], "type": torn_key[1], "sample_index": 0, "conv": "..."})
        with (out / RECORDS).open("a") as handle:
            handle.write(torn[: len(torn) // 2])

        # The restart runs in this process (same CLI code, no second import of torch: the test stays fast).
        code = main(command[3:])
    restart = capsys.readouterr()
    assert code == 0, restart.out + restart.err
    assert f"skipped as done before {len(done_before)}" in restart.out
    assert "incomplete lines from a killed run cut and redone: 1" in restart.out

    lines = (out / RECORDS).read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line is complete, valid JSON
    keys = [(r["image_id"], r["type"], r["sample_index"]) for r in rows + _rows(out / REJECTED)]
    assert len(keys) == len(set(keys)) == len(expected)  # each key exactly once
    assert set(keys) == expected
    assert torn_key in keys
    # The API key reached the server and nothing else.
    assert {entry.authorization for entry in server.log} == {"Bearer sk-kill-secret"}
    for text in [first_output, restart.out, restart.err] + [p.read_text() for p in out.iterdir() if p.is_file()]:
        assert "sk-kill-secret" not in text
    # The restart wrote the LLaVA JSON of every record.
    llava = json.loads((out / "llava_instruct.json").read_text())
    assert sorted(r["id"] for r in llava) == sorted(r["id"] for r in rows)


def test_cli_writes_llava_json_and_a_dataset_that_our_loader_reads(world, tmp_path, capsys):
    out, dataset_dir = tmp_path / "out", tmp_path / "dataset"
    with FakeChatServer() as server:
        code = main(
            [
                "generate-instructions",
                "--annotations",
                str(world / "annotations" / "instances.json"),
                "--types",
                "conv,detail",
                "--limit",
                "5",
                "--samples-per-image",
                "2",
                "--base-url",
                server.base_url,
                "--model",
                "m",
                "--out",
                str(out),
                "--dataset",
                str(dataset_dir),
                "--image-root",
                str(world / "images"),
                "--no-progress",
                "--price-input",
                "1",
                "--price-output",
                "2",
            ]
        )
    assert code == 0, capsys.readouterr()
    printed = capsys.readouterr().out
    assert "keys: 20 (done now 20" in printed and "cost: " in printed
    records = list(iter_records(out))
    llava = json.loads((out / "llava_instruct.json").read_text())
    assert len(records) == len(llava) == 20
    assert all(set(record) == {"id", "image", "conversations"} for record in llava)
    assert {r["type"] for r in records} == {"conversation", "detail"}
    # The LLaVA JSON loads with llava_format's loader, and every image resolves in the world's image folder.
    dataset, report = load_llava_dataset(out / "llava_instruct.json", image_root=world / "images", progress=False)
    assert report.rows_written == 20 and not report.skipped
    assert all((world / "images" / name).is_file() for name in (n for f in dataset["image_files"] for n in f))
    from datasets import load_from_disk

    saved = load_from_disk(str(dataset_dir))
    assert sorted(saved["id"]) == sorted(r["id"] for r in llava)
    first = next(r for r in llava if r["id"] == saved[0]["id"])
    assert (
        "".join(p["text"] or "<image>" for p in saved[0]["messages"][0]["content"])
        == first["conversations"][0]["value"]
    )


def test_failures_exit_non_zero_and_say_how_to_retry(world, tmp_path, capsys):
    with FakeChatServer(faults=lambda key, attempt: "503") as server:
        code = main(
            [
                "generate-instructions",
                "--annotations",
                str(world),
                "--limit",
                "1",
                "--types",
                "detail",
                "--base-url",
                server.base_url,
                "--model",
                "m",
                "--out",
                str(tmp_path),
                "--max-retries",
                "1",
                "--initial-backoff",
                "0.01",
                "--no-progress",
            ]
        )
    printed = capsys.readouterr().out
    assert code == 1
    assert "failed after retries: 1 (1 http 503); rerun the same command to retry them" in printed
    assert len(_rows(tmp_path / FAILED)) == 1 and _rows(tmp_path / RECORDS) == []


def test_dataset_from_the_python_api(tmp_path):
    with FakeChatServer() as server:
        from llava_hf.datagen import EngineSettings, OpenAICompatibleBackend, generate_instructions

        generate_instructions(
            list(shapes_contexts(seed=9, num_images=3)),
            OpenAICompatibleBackend("m", base_url=server.base_url),
            tmp_path,
            EngineSettings(kinds=("complex",), progress=False),
        )
    dataset, report = load_instruction_dataset(tmp_path, image_root=tmp_path, progress=False)
    assert len(dataset) == report.rows_written == 3
    messages = dataset["messages"]  # the column only: the images (paths) are not decoded
    assert all([m["role"] for m in turns] == ["user", "assistant"] for turns in messages)  # one Q, one A
