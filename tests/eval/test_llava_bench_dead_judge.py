"""LLaVA-Bench with a judge that is down or fails on some questions: the run stops early naming the endpoint, a
rerun judges again what has no verdict, an incomplete run never reports a score, and one question_id on two
lines is refused from Python as from the command line."""

import json
import time

import pytest

from fixtures.llava_bench import (
    CANDIDATES,
    CONTEXTS,
    QUESTIONS,
    REFERENCES,
    ScriptedServer,
    bench_command,
    write_inputs,
)
from fixtures.servers import free_port
from llava_hf.cli import main
from llava_hf.datagen import BackendUnusable, TransientError
from llava_hf.eval.llava_bench import OpenAIJudge, review
from llava_hf.utils import read_jsonl

# Six questions, so that a stop after a few failures leaves some never asked.
MORE_QUESTIONS = QUESTIONS + [{**q, "question_id": q["question_id"] + 3} for q in QUESTIONS]
MORE_REFERENCES = REFERENCES + [{**r, "question_id": r["question_id"] + 3} for r in REFERENCES]
MORE_CANDIDATES = CANDIDATES + [{**c, "question_id": c["question_id"] + 3} for c in CANDIDATES]


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: every connection is refused


def test_a_dead_judge_stops_review_early_naming_the_endpoint(tmp_path):
    url = dead_url()
    judge = OpenAIJudge("judge", base_url=url, max_retries=0, timeout=2.0)
    reviews = tmp_path / "reviews.jsonl"
    start = time.monotonic()
    with pytest.raises(BackendUnusable) as stopped:
        review(judge, MORE_QUESTIONS, CONTEXTS, MORE_REFERENCES, MORE_CANDIDATES, reviews, progress=False)
    assert time.monotonic() - start < 20
    message = str(stopped.value)
    assert "127.0.0.1" in message and str(url.split(":")[-1].split("/")[0]) in message  # the endpoint, its port
    assert "0 of 6" in message and "again" in message  # how far it got, and that a rerun resumes
    rows = read_jsonl(reviews) if reviews.exists() else []
    assert len(rows) < len(MORE_QUESTIONS)  # stopped before asking every question
    assert all("error" in row and row["tuple"] == [-1.0, -1.0] for row in rows)  # failures marked, never scores


def test_a_judge_that_dies_mid_run_stops_after_a_few_failures_in_a_row(tmp_path):
    calls = []

    def judge(messages):
        calls.append(messages)
        if len(calls) == 1:
            return "8 9\nfine"
        raise TransientError("connection", "ConnectError: connection refused")

    with pytest.raises(BackendUnusable, match="1 of 6"):
        review(judge, MORE_QUESTIONS, CONTEXTS, MORE_REFERENCES, MORE_CANDIDATES, tmp_path / "r.jsonl", progress=False)
    assert len(calls) < len(MORE_QUESTIONS)  # one success earlier does not keep a dead judge asked forever
    rows = read_jsonl(tmp_path / "r.jsonl")
    assert rows[0]["tuple"] == [8.0, 9.0] and all("error" in row for row in rows[1:])


def test_the_command_with_a_dead_judge_exits_non_zero_in_seconds(tmp_path, capsys):
    files = write_inputs(tmp_path, MORE_QUESTIONS, MORE_REFERENCES, MORE_CANDIDATES)
    url, out = dead_url(), tmp_path / "out"
    start = time.monotonic()
    code = main(bench_command(files, url, out, "--judge-max-retries", "1", "--judge-timeout", "2"))
    assert time.monotonic() - start < 30
    captured = capsys.readouterr()
    assert code == 1
    assert url in captured.err and "0 of 6" in captured.err and "again" in captured.err
    assert not (out / "results.json").exists()  # no score from no verdict
    assert not any(line.startswith("all ") for line in captured.out.splitlines())
    rows = read_jsonl(out / "reviews.jsonl") if (out / "reviews.jsonl").exists() else []
    assert all("error" in row for row in rows)


def test_failed_questions_are_judged_again_on_rerun_and_only_then_scored(tmp_path, capsys):
    files = write_inputs(tmp_path)
    out = tmp_path / "out"
    # q1: HTTP 500 on the first call and on each of the client's 6 retries (5 ms apart, from retry-after-ms).
    script = [("ok", "8 4\n")] + [("status", 500)] * 7 + [("ok", "10 5\n")]
    with ScriptedServer(script) as base_url:
        code = main(bench_command(files, base_url, out))
    captured = capsys.readouterr()
    assert code == 1  # a question without a verdict: no benchmark score
    assert "1 of 3" in captured.err and "500" in captured.err and "again" in captured.err
    assert "2 of 3 reviewed" in captured.out  # a partial summary says it is one
    assert not (out / "results.json").exists()

    with ScriptedServer([("ok", "6 6\n")]) as base_url:
        server = base_url
        code = main(bench_command(files, server, out))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = read_jsonl(out / "reviews.jsonl")
    assert sorted(row["question_id"] for row in rows) == [0, 1, 2]  # the failure replaced, not kept beside
    assert all("error" not in row for row in rows)
    assert {row["question_id"]: row["tuple"] for row in rows}[1] == [6.0, 6.0]
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["all"]["count"] == 3
    assert results["metrics"]["all"]["relative_score"] == pytest.approx(100 * (4 + 6 + 5) / (8 + 6 + 10))


def test_an_unreadable_reply_is_asked_again_on_rerun(tmp_path):
    reviews = tmp_path / "reviews.jsonl"
    replies = iter(["8 9\nok"] + ["no scores"] * 3 + ["7 6\nok"])
    first = review(lambda m: next(replies), QUESTIONS, CONTEXTS, REFERENCES, CANDIDATES, reviews, progress=False)
    assert first.unparseable_ids == ["1"]
    asked = []

    def judge(messages):
        asked.append(messages)
        return "5 5\nok"

    again = review(judge, QUESTIONS, CONTEXTS, REFERENCES, CANDIDATES, reviews, progress=False)
    assert len(asked) == 1 and again.skipped_existing == 2
    rows = read_jsonl(reviews)
    assert {row["question_id"]: row["tuple"] for row in rows} == {0: [8.0, 9.0], 1: [5.0, 5.0], 2: [7.0, 6.0]}
    assert len(rows) == 3 and all("error" not in row for row in rows)


def test_summarize_labels_a_file_with_failed_reviews_as_partial(tmp_path, capsys):
    path = tmp_path / "reviews.jsonl"
    rows = [
        {"question_id": 0, "category": "llava_bench_conv", "tuple": [8.0, 4.0]},
        {"question_id": 1, "category": "llava_bench_detail", "tuple": [-1.0, -1.0], "error": "APIConnectionError"},
        {"question_id": 2, "category": "llava_bench_complex", "tuple": [10.0, 5.0]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    main(["eval", "summarize", str(path)])
    assert "2 of 3 reviewed" in capsys.readouterr().out


def test_review_refuses_one_question_id_on_two_lines_naming_the_file(tmp_path):
    files = write_inputs(tmp_path, references=REFERENCES + [REFERENCES[0]])
    with pytest.raises(ValueError, match=r"reference\.jsonl lines 1 and 4: question_id '0' appears twice"):
        review(lambda m: "5 5\n", QUESTIONS, CONTEXTS, files["reference"], files["answers"], tmp_path / "r.jsonl")
    assert not (tmp_path / "r.jsonl").exists()  # refused before judging anything

    files = write_inputs(tmp_path, questions=QUESTIONS + [QUESTIONS[2]])
    with pytest.raises(ValueError, match=r"questions\.jsonl lines 3 and 4: question_id '2' appears twice"):
        review(lambda m: "5 5\n", files["questions"], CONTEXTS, files["reference"], files["answers"], tmp_path / "r")


def test_review_refuses_duplicate_ids_in_rows_given_from_python(tmp_path):
    with pytest.raises(ValueError, match=r"candidates rows 1 and 4: question_id '0' appears twice"):
        review(lambda m: "5 5\n", QUESTIONS, CONTEXTS, REFERENCES, CANDIDATES + [CANDIDATES[0]], tmp_path / "r.jsonl")
    assert not (tmp_path / "r.jsonl").exists()


def test_the_http_client_logs_no_line_per_request_unless_verbose(tmp_path, caplog):
    import logging

    files = write_inputs(tmp_path)
    caplog.set_level(logging.INFO)
    with ScriptedServer([("ok", "8 4\n"), ("ok", "7 7\n"), ("ok", "9 3\n")]) as base_url:
        assert main(bench_command(files, base_url, tmp_path / "out")) == 0
    assert not [r for r in caplog.records if r.name.startswith("http")]  # the progress bar stays readable
    with ScriptedServer([("ok", "8 4\n"), ("ok", "7 7\n"), ("ok", "9 3\n")]) as base_url:
        assert main(["-v", *bench_command(files, base_url, tmp_path / "again")]) == 0
    assert any(r.name.startswith("http") and "HTTP Request" in r.getMessage() for r in caplog.records)


def test_verdicts_on_another_answers_file_are_judged_again_not_reused(tmp_path):
    reviews = tmp_path / "reviews.jsonl"
    review(lambda m: "8 4\n", QUESTIONS, CONTEXTS, REFERENCES, CANDIDATES, reviews, progress=False)
    other_model = [{**c, "text": f"other {c['question_id']}", "answer_id": f"o{c['question_id']}"} for c in CANDIDATES]
    again = review(lambda m: "8 8\n", QUESTIONS, CONTEXTS, REFERENCES, other_model, reviews, progress=False)
    assert again.skipped_existing == 0 and again.retried == 3  # model A's scores are not filed under model B
    rows = read_jsonl(reviews)
    assert [row["answer2_id"] for row in rows] == ["o0", "o1", "o2"] and all(r["tuple"] == [8.0, 8.0] for r in rows)


def test_an_incomplete_run_removes_the_results_of_an_earlier_one(tmp_path, capsys):
    files = write_inputs(tmp_path)
    out = tmp_path / "out"
    with ScriptedServer([("ok", "8 4\n"), ("ok", "7 7\n"), ("ok", "9 3\n")]) as base_url:
        assert main(bench_command(files, base_url, out)) == 0
    assert (out / "results.json").exists()
    other = [{**c, "answer_id": f"o{c['question_id']}"} for c in CANDIDATES]
    files = write_inputs(tmp_path, candidates=other)
    assert main(bench_command(files, dead_url(), out, "--judge-max-retries", "0", "--judge-timeout", "2")) == 1
    assert not (out / "results.json").exists()  # no score left beside reviews it does not describe
