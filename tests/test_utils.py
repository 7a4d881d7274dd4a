"""Shared helpers: --device / --dtype values, JSONL reading and torn-line repair, checkpoint configs, Hub repo ids,
chat templates by name or file, generation settings."""

import pytest
import torch

from llava_hf.chat_templates import get_chat_template, resolve_chat_template
from llava_hf.generation import GenerationSettings
from llava_hf.utils import (
    is_hub_id,
    iter_jsonl,
    parse_dtype,
    read_config,
    read_jsonl,
    repair_torn_tail,
    resolve_device,
    validate_hub_id,
)


def test_dtype_names_become_torch_dtypes_and_auto_stays():
    assert parse_dtype("auto") == "auto"
    assert parse_dtype("bfloat16") is torch.bfloat16
    assert parse_dtype(torch.float16) is torch.float16


@pytest.mark.parametrize("bad", ["bf16", "nn", "float33"])
def test_unknown_dtype_raises_naming_the_value(bad):
    with pytest.raises(ValueError, match=f"got '{bad}'"):
        parse_dtype(bad)


def test_device_defaults_to_cuda_when_available():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device(None) == ("cuda" if torch.cuda.is_available() else "cpu")


def test_jsonl_rows_with_line_numbers_blank_lines_skipped(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}')  # the last line may lack its newline
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (3, {"a": 2})]
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]


def test_jsonl_line_separator_inside_a_string_is_not_a_line_break(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a\u2028b"}\n', encoding="utf-8")  # json.dumps(ensure_ascii=False) writes U+2028 as is
    assert read_jsonl(path) == [{"text": "a\u2028b"}]


def test_bad_jsonl_line_raises_naming_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(ValueError, match="rows.jsonl line 2: not valid JSON"):
        read_jsonl(path)
    with pytest.raises(ValueError, match="line 2: not valid JSON .*edited or corrupted"):
        list(iter_jsonl(path, skip_torn_tail=True))


def test_torn_last_line_is_skipped_then_cut(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    assert [row for _, row in iter_jsonl(path, skip_torn_tail=True)] == [{"a": 1}, {"a": 2}]
    assert repair_torn_tail(path) and path.read_text() == '{"a": 1}\n{"a": 2}\n'
    assert not repair_torn_tail(path)  # whole lines: nothing to cut
    path.write_text('{"a": ')  # no complete line at all
    assert repair_torn_tail(path) and path.read_bytes() == b""
    assert not repair_torn_tail(tmp_path / "missing.jsonl")


def test_hub_ids_follow_huggingface_hub_rules(tmp_path, monkeypatch):
    assert is_hub_id("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert not is_hub_id("gpt2")  # namespace/name only
    assert not is_hub_id("a/b/c") and not is_hub_id("me/model--x") and not is_hub_id("") and not is_hub_id(None)
    (tmp_path / "me" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert not is_hub_id("me/model")  # an existing local folder is not a Hub id
    with pytest.raises(ValueError, match="Cannot have -- or .."):
        validate_hub_id("me/model--x")


def test_read_config_raises_the_callers_error_naming_the_folder(tmp_path):
    class MyError(ValueError):
        pass

    with pytest.raises(MyError, match="no config.json; is this a model folder"):
        read_config(tmp_path, MyError)
    with pytest.raises(FileNotFoundError):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llava_hf"}')
    assert read_config(tmp_path) == {"model_type": "llava_hf"}
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        read_config(tmp_path)


def test_chat_templates_resolve_by_name_file_or_source(tmp_path):
    assert resolve_chat_template(None) is None
    assert resolve_chat_template("vicuna_v1") == get_chat_template("vicuna_v1")
    assert resolve_chat_template("chatml", default_system="Be brief.") == get_chat_template("chatml", "Be brief.")
    (tmp_path / "mine.jinja").write_text("{{ messages }}")
    assert resolve_chat_template(str(tmp_path / "mine.jinja")) == "{{ messages }}"
    assert resolve_chat_template("{% for m in messages %}{{ m }}{% endfor %}").startswith("{% for")
    with pytest.raises(FileNotFoundError, match="missing.jinja"):
        resolve_chat_template(str(tmp_path / "missing.jinja"))


def test_generation_settings_pass_sampling_options_only_when_sampling():
    assert GenerationSettings(max_new_tokens=5, top_p=0.9).generate_kwargs() == {
        "max_new_tokens": 5,
        "do_sample": False,
        "num_beams": 1,
    }
    sampled = GenerationSettings(do_sample=True, temperature=0.7).generate_kwargs()
    assert sampled["temperature"] == 0.7 and "top_p" not in sampled
    assert GenerationSettings(do_sample=True, top_p=0.5).generate_kwargs()["top_p"] == 0.5


def test_atomic_write_text_keeps_the_old_file_when_the_write_fails(tmp_path):
    from llava_hf.utils import atomic_write_text

    path = tmp_path / "results.json"
    atomic_write_text(path, '{"accuracy": 1}')
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, '{"accuracy": "\ud800"}')  # fails mid-write, as a kill or a full disk would
    assert path.read_text() == '{"accuracy": 1}' and [p.name for p in tmp_path.iterdir()] == ["results.json"]
