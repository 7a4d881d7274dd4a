"""The engine against a real OpenAI-compatible server on loopback with injected faults: nothing lost or duplicated,
every error and rejection counted, retries honour Retry-After, a restart resumes."""

import asyncio
import email.utils
import json
import socket
import time
import zlib

import pytest

from fixtures.datagen_server import FakeChatServer
from llava_hf.datagen import (
    BackendUnusable,
    EngineSettings,
    ImageContext,
    InstructionEngine,
    OpenAICompatibleBackend,
    generate_instructions,
    shapes_contexts,
)
from llava_hf.datagen.openai_compatible import parse_retry_after
from llava_hf.datagen.store import FAILED, RECORDS, REJECTED, REPORT

# Server outcome -> the error kind the client counts it under.
CLIENT_KIND = {
    "429": "http 429",
    "500": "http 500",
    "503": "http 503",
    "timeout": "timeout",
    "reset": "connection",
    "malformed": "malformed response",
    "400": "http 400",
}
# Fault plans for the first attempts of a request, picked by a hash of the request.
PLANS = [[], [], ["429"], ["500"], ["timeout"], ["reset"], ["malformed"], ["503", "429"], ["reset", "malformed"]]


def faults(key: str, attempt: int) -> str | None:
    if "ALWAYS500" in key:
        return "500"
    if "BADREQUEST" in key:
        return "400"
    plan = PLANS[zlib.crc32(key.encode()) % len(PLANS)]
    return plan[attempt - 1] if attempt <= len(plan) else None


def marked(image_id: str, marker: str) -> ImageContext:
    return ImageContext(
        image_id,
        f"{image_id}.png",
        (f"A photo {marker} of a bench.", "A park bench."),
        (("bench", (0.1, 0.2, 0.5, 0.6)),),
    )


def contexts() -> list[ImageContext]:
    return list(shapes_contexts(seed=0, num_images=12)) + [
        marked("refuse", "REFUSE"),
        marked("truncate", "TRUNCATE"),
        marked("unbalanced", "UNBALANCED"),
        marked("always500", "ALWAYS500"),
        marked("badrequest", "BADREQUEST"),
    ]


def settings(**overrides) -> EngineSettings:
    values = dict(
        concurrency=8,
        max_retries=3,
        initial_backoff=0.01,
        max_backoff=0.05,
        input_price=2.0,
        output_price=8.0,
        progress=False,
    )
    return EngineSettings(**(values | overrides))


def backend(server: FakeChatServer, timeout: float = 0.3) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend(
        "test-model", base_url=server.base_url, api_key_env="DATAGEN_TEST_KEY", timeout=timeout
    )


def read_lines(path):
    """Every line of a JSONL file parsed (a bad line fails the test)."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def keys(rows):
    return [(r["image_id"], r["type"], r["sample_index"]) for r in rows]


def test_faults_lose_nothing_duplicate_nothing_and_are_all_counted(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAGEN_TEST_KEY", "sk-test-secret")
    images = contexts()
    expected = {(c.image_id, kind, 0) for c in images for kind in ("conversation", "detail", "complex")}
    with FakeChatServer(faults=faults, retry_after="0.2", hang=0.8) as server:
        report = generate_instructions(images, backend(server), tmp_path, settings())
    records, rejected, failed = (read_lines(tmp_path / name) for name in (RECORDS, REJECTED, FAILED))

    # Every key is a record or a rejection exactly once, except the ones that kept failing.
    failing = {k for k in expected if k[0] in ("always500", "badrequest")}
    assert len(keys(records) + keys(rejected)) == len(set(keys(records) + keys(rejected)))
    assert set(keys(records)) | set(keys(rejected)) == expected - failing
    assert set(keys(failed)) == failing and len(failed) == len(failing)
    assert report.total == len(expected) and report.done == len(records)

    # Rejections are kept with their reason: refusals and truncations for every type; the Q-without-A response is
    # unbalanced for conversation and complex, but a (strange) valid description for detail.
    assert report.rejected == {"refusal": 3, "truncated": 3, "unbalanced Q/A": 2}
    assert (
        sorted((r["image_id"], r["reason"]) for r in rejected if r["image_id"] == "unbalanced")
        == [("unbalanced", "unbalanced Q/A")] * 2
    )
    assert all(r["response"] for r in rejected)

    # Every fault the server injected is counted under its kind; 5xx retried to the limit, 400 not retried.
    served = server.outcomes()
    assert set(served) == {"ok", "429", "500", "503", "timeout", "reset", "malformed", "400"}  # each fault occurred
    assert report.errors == {CLIENT_KIND[outcome]: n for outcome, n in served.items() if outcome != "ok"}
    assert report.failed == {"http 500": 3, "http 400": 3}
    assert all(row["attempts"] == 4 for row in failed if row["image_id"] == "always500")
    assert all(row["attempts"] == 1 for row in failed if row["image_id"] == "badrequest")
    assert report.retries == sum(report.errors.values()) - report.failed_total

    # Token usage and cost are what the server's successful answers reported.
    sent = [entry.usage for entry in server.log if entry.usage]
    assert len(sent) == len(records) + len(rejected)
    assert report.prompt_tokens == sum(u["prompt_tokens"] for u in sent) > 0
    assert report.completion_tokens == sum(u["completion_tokens"] for u in sent) > 0
    assert report.cost == pytest.approx((report.prompt_tokens * 2.0 + report.completion_tokens * 8.0) / 1e6)
    assert json.loads((tmp_path / REPORT).read_text())["failed_total"] == 6

    # The key travelled in the header and nowhere else.
    assert {entry.authorization for entry in server.log} == {"Bearer sk-test-secret"}
    for name in (RECORDS, REJECTED, FAILED, REPORT):
        assert "sk-test-secret" not in (tmp_path / name).read_text()

    # A second run against a healthy server only does what failed, and every key is then done once.
    with FakeChatServer() as healthy:
        again = generate_instructions(images, backend(healthy), tmp_path, settings())
    assert again.skipped_existing == len(expected) - len(failing) and again.done == len(failing)
    assert len(healthy.log) == len(failing)
    all_keys = keys(read_lines(tmp_path / RECORDS)) + keys(read_lines(tmp_path / REJECTED))
    assert sorted(all_keys) == sorted(expected)


def test_retry_after_is_honoured(tmp_path):
    with FakeChatServer(faults=lambda key, attempt: "429" if attempt == 1 else None, retry_after="0.3") as server:
        report = generate_instructions(
            list(shapes_contexts(seed=1, num_images=2)), backend(server), tmp_path, settings(kinds=("detail",))
        )
    assert report.done == 2 and report.errors == {"http 429": 2}
    arrivals: dict[str, list[float]] = {}
    for entry in server.log:
        arrivals.setdefault(entry.query, []).append(entry.arrived)
    # The backoff alone would wait at most 0.01 s; the server asked for 0.3 s.
    assert all(times[1] - times[0] >= 0.29 for times in arrivals.values()), arrivals


def test_retry_after_forms():
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 27 < parse_retry_after({"retry-after": later}) <= 30
    assert parse_retry_after({}) is None and parse_retry_after({"retry-after": "soon"}) is None


def test_concurrency_limit_bounds_requests_in_flight(tmp_path):
    with FakeChatServer(latency=0.05) as server:
        report = generate_instructions(
            list(shapes_contexts(seed=2, num_images=10)), backend(server, timeout=5), tmp_path, settings(concurrency=4)
        )
    assert report.done == 30
    assert server.max_in_flight == 4


def test_a_torn_last_line_is_cut_counted_and_redone(tmp_path):
    images = list(shapes_contexts(seed=3, num_images=4))
    with FakeChatServer() as server:
        generate_instructions(images, backend(server), tmp_path, settings())
        path = tmp_path / RECORDS
        lines = path.read_text().splitlines(keepends=True)
        torn_key = keys([json.loads(lines[-1])])[0]
        # What a kill in the middle of writing the last record would leave: half a line, no newline.
        path.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
        server.log.clear()
        report = generate_instructions(images, backend(server), tmp_path, settings())
    assert report.torn_lines_repaired == 1 and report.done == 1 and report.skipped_existing == 11
    assert [entry.query.split("\n")[0] for entry in server.log] == [torn_key[1]]
    rows = read_lines(path)
    assert sorted(keys(rows)) == sorted(
        (c.image_id, k, 0) for c in images for k in ("conversation", "detail", "complex")
    )


def test_a_corrupt_line_in_the_middle_stops_with_its_location(tmp_path):
    (tmp_path / RECORDS).write_text('{"image_id": "a", "type": "detail", "sample_index": 0}\nnot json\n{}\n')
    with FakeChatServer() as server, pytest.raises(ValueError, match=f"{RECORDS} line 2"):
        generate_instructions(list(shapes_contexts(seed=3, num_images=1)), backend(server), tmp_path, settings())


def test_a_rejected_key_is_not_requested_again(tmp_path):
    images = [marked("refuse", "REFUSE")]
    with FakeChatServer() as server:
        first = generate_instructions(images, backend(server), tmp_path, settings())
        second = generate_instructions(images, backend(server), tmp_path, settings())
    assert first.rejected == {"refusal": 3} and second.skipped_existing == 3 and len(server.log) == 3


def test_an_unusable_backend_stops_the_run_naming_the_fix(tmp_path):
    with FakeChatServer(faults=lambda key, attempt: "401") as server:
        engine = InstructionEngine(backend(server), tmp_path, settings())
        with pytest.raises(BackendUnusable, match="DATAGEN_TEST_KEY"):
            asyncio.run(engine.run(list(shapes_contexts(seed=4, num_images=20))))
    assert len(server.log) < 60  # stopped early, not 60 doomed requests
    assert read_lines(tmp_path / RECORDS) == []
    assert "DATAGEN_TEST_KEY" in json.loads((tmp_path / REPORT).read_text())["stopped"]


def test_samples_per_image_and_seed_give_distinct_reproducible_requests(tmp_path):
    images = list(shapes_contexts(seed=5, num_images=2))
    runs = []
    for name in ("a", "b"):
        with FakeChatServer() as server:
            generate_instructions(
                images, backend(server), tmp_path / name, settings(samples_per_image=2, concurrency=3)
            )
        runs.append(sorted((r["id"], json.dumps(r["conversations"])) for r in read_lines(tmp_path / name / RECORDS)))
    assert runs[0] == runs[1]  # same seed, same records whatever the completion order
    assert len(runs[0]) == 2 * 3 * 2


def test_a_server_that_is_down_stops_the_run_instead_of_failing_every_key(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = OpenAICompatibleBackend("m", base_url=f"http://127.0.0.1:{port}/v1", timeout=0.3)
    engine = InstructionEngine(down, tmp_path, settings(concurrency=4, max_retries=1))
    with pytest.raises(BackendUnusable, match="first 10 requests all failed"):
        asyncio.run(engine.run(list(shapes_contexts(seed=6, num_images=20))))
    report = json.loads((tmp_path / REPORT).read_text())
    failed = read_lines(tmp_path / FAILED)
    assert report["failed_total"] == len(failed) >= 10 and report["failed"] == {"connection": len(failed)}
    assert report["left"] == 60 - len(failed) > 0  # not attempted, so the next run does them


def test_two_runs_cannot_write_one_folder_at_once(tmp_path):
    from llava_hf.datagen.store import InstructionStore

    with InstructionStore(tmp_path), pytest.raises(RuntimeError, match="in use by another"):
        InstructionStore(tmp_path).open()
    InstructionStore(tmp_path).open().close()  # released once the first run is done
