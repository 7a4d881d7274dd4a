"""LLaVA-Bench: judge prompts, score parsing, retries over real HTTP on loopback, summaries."""

import pytest

from fixtures.external import external
from fixtures.llava_bench import CANDIDATES, CONTEXTS, QUESTIONS, REFERENCES, ScriptedServer
from llava_hf.eval.llava_bench import (
    OpenAIJudge,
    TransformersJudge,
    judge_messages,
    parse_scores,
    read_jsonl,
    review,
    summarize,
    symbolic_context,
)


def test_judge_sees_context_question_reference_then_candidate():
    messages = judge_messages(symbolic_context(CONTEXTS[0]), "Q?", "REF", "CAND", "conv")
    user = messages[1]["content"]
    assert "A red bus on a street.\n\nbus: [0.1, 0.2, 0.9, 0.8]" in user
    assert user.index("[Context]") < user.index("[Question]") < user.index("REF") < user.index("CAND")
    assert symbolic_context(CONTEXTS[1]) == "A man runs after a leaving train."


@pytest.mark.parametrize(
    "reply,expected",
    [("8 10\nbecause", (8.0, 10.0)), ("7.5, 9\n", (7.5, 9.0)), ("Scores: 8 and 9", None), ("11 3", None), ("", None)],
)
def test_parse_scores(reply, expected):
    assert parse_scores(reply) == expected


def test_http_judge_retries_and_reports(tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "secret-from-env")
    script = [
        ("status", 429),
        ("status", 500),
        ("ok", "8 9\nclear answer"),  # q0: client retries 429 and 500
        ("ok", "I liked both."),
        ("ok", "7 6\nok"),  # q1: unparseable reply asked again
        ("garbage", None),
        ("ok", "no"),
        ("ok", "still no"),  # q2: broken body, then two unreadable replies
    ]
    with ScriptedServer(script) as base_url:
        judge = OpenAIJudge("judge-model", base_url=base_url, api_key_env="JUDGE_KEY", max_retries=3)
        report = review(judge, QUESTIONS, CONTEXTS, REFERENCES, CANDIDATES, tmp_path / "reviews.jsonl", progress=False)
    rows = read_jsonl(tmp_path / "reviews.jsonl")
    assert [r["tuple"] for r in rows] == [[8.0, 9.0], [7.0, 6.0], [-1.0, -1.0]]
    assert [r["category"] for r in rows] == ["llava_bench_conv", "llava_bench_detail", "llava_bench_complex"]
    assert "error" in rows[2] and report.unparseable == 1 and report.unparseable_ids == ["2"]
    assert summarize(rows)["excluded_unparseable"] == 1
    assert summarize(rows)["all"]["relative_score"] == pytest.approx(100 * (9 + 6) / (8 + 7))

    # A rerun keeps the verdicts and asks again only what has no scores (the unreadable reply): nothing duplicated.
    with ScriptedServer([]) as base_url:
        again = review(
            OpenAIJudge("judge-model", base_url=base_url),
            QUESTIONS,
            CONTEXTS,
            REFERENCES,
            CANDIDATES,
            tmp_path / "reviews.jsonl",
            progress=False,
        )
    assert again.skipped_existing == 2 and again.retried == 1 and len(read_jsonl(tmp_path / "reviews.jsonl")) == 3


def test_key_comes_from_the_environment_and_is_sent(tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "secret-from-env")
    seen = {}
    with ScriptedServer([("ok", "6 6\n")]) as base_url:
        judge = OpenAIJudge("m", base_url=base_url, api_key_env="JUDGE_KEY")
        seen["client_key"] = judge.client.api_key
        review(judge, QUESTIONS[:1], CONTEXTS, REFERENCES, CANDIDATES, tmp_path / "r.jsonl", progress=False)
    assert seen["client_key"] == "secret-from-env"
    assert "secret-from-env" not in (tmp_path / "r.jsonl").read_text()


def test_local_transformers_judge(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from fixtures.tester import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    model = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            vocab_size=160,
        )
    ).eval()
    judge = TransformersJudge(model, tokenizer, max_new_tokens=4)
    report = review(
        judge, QUESTIONS[:1], CONTEXTS, REFERENCES, CANDIDATES, tmp_path / "r.jsonl", attempts=2, progress=False
    )
    # A random model writes no scores: the review is kept, marked and counted, never dropped.
    assert report.reviewed == 1 and report.unparseable == 1
    assert read_jsonl(tmp_path / "r.jsonl")[0]["tuple"] == [-1.0, -1.0]


def test_official_reviews_summarize_to_their_own_tuples():
    rows = read_jsonl(external("llava-bench-wild", "reviews_llava-v1.5-13b-eval1.jsonl"))
    assert all(parse_scores(r["content"]) == tuple(r["tuple"]) for r in rows)  # our parser reads GPT-4's replies
    summary = summarize(rows)
    for category in ("conv", "detail", "complex"):
        pairs = [r["tuple"] for r in rows if r["category"] == f"llava_bench_{category}"]
        expected = 100 * sum(p[1] for p in pairs) / sum(p[0] for p in pairs)
        assert summary[category]["relative_score"] == pytest.approx(expected)
        assert summary[category]["count"] == len(pairs)
    everything = [r["tuple"] for r in rows]
    assert summary["all"]["relative_score"] == pytest.approx(
        100 * sum(p[1] for p in everything) / sum(p[0] for p in everything)
    )
    assert summary["all"]["count"] == 60


def test_rerun_after_a_kill_mid_write_judges_that_question_again(tmp_path):
    reviews = tmp_path / "reviews.jsonl"
    review(lambda messages: "8 9\nok", QUESTIONS[:2], CONTEXTS, REFERENCES, CANDIDATES, reviews, progress=False)
    with reviews.open("a") as handle:  # a kill in the middle of writing the next review
        handle.write('{"id": 3, "question_id": 2, "cont')
    again = review(lambda messages: "7 6\nok", QUESTIONS, CONTEXTS, REFERENCES, CANDIDATES, reviews, progress=False)
    rows = read_jsonl(reviews)
    assert [r["question_id"] for r in rows] == [0, 1, 2] and rows[2]["tuple"] == [7.0, 6.0]
    assert again.skipped_existing == 2 and again.reviewed == 1
