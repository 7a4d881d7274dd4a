"""ScienceQA (`problems.json` + `pid_splits.json` + `images/<pid>/image.png`) -> LLaVA records.

Prompt formats, as the paper's ScienceQA experiments used them:

- `CQM-A` (the LLaVA-1.5 evaluation file `llava_test_CQM-A.json`): `<image>\\n` (image problems only), then
  `Context: <hint>\\n` (when there is a hint), the question, and the options one per line as `A. ...`; the answer
  is the letter.
- `QCM-LEA` (LLaVA v1's ScienceQA fine-tuning): `<question>\\nContext: <hint or N/A>\\nOptions: (A) ... (B) ...`,
  then `\\n<image>` for image problems; the answer is `<lecture> <solution> The answer is X.`.

Each record keeps the problem's metadata (subject, grade, context modality, ...) for per-category scoring.
"""

import json
from pathlib import Path
from typing import Any

LETTERS = "ABCDE"
# LLaVA-1.5's instruction for multiple-choice questions (its ScienceQA evaluation prompt and its A-OKVQA training rows).
LETTER_PROMPT = "\nAnswer with the option's letter from the given choices directly."
FORMATS = ("CQM-A", "QCM-LEA", "QCM-A")
SUBJECTS = {"natural science": "NAT", "social science": "SOC", "language science": "LAN"}


def _letters(choices: list[str], pid: str) -> list[str]:
    if not 2 <= len(choices) <= len(LETTERS):
        raise ValueError(f"ScienceQA problem {pid}: {len(choices)} choices; expected 2 to {len(LETTERS)}.")
    return list(LETTERS[: len(choices)])


def format_cqm(question: str, hint: str, choices: list[str], has_image: bool) -> str:
    """The CQM human turn: image, context, question, lettered options (one per line)."""
    options = "\n".join(f"{letter}. {choice}" for letter, choice in zip(LETTERS, choices))
    context = f"Context: {hint}\n" if hint else ""
    return f"{'<image>' + chr(10) if has_image else ''}{context}{question}\n{options}"


def _squeeze(text: str) -> str:
    # The paper's prompt builder collapsed double spaces (left by empty lectures) and stripped the ends.
    return text.replace("  ", " ").strip()


def format_qcm(question: str, hint: str, choices: list[str], has_image: bool) -> str:
    """The QCM human turn of LLaVA v1's ScienceQA training data (`Question: ` label dropped, image last)."""
    options = " ".join(f"({letter}) {choice}" for letter, choice in zip(LETTERS, choices))
    text = _squeeze(f"Question: {question}\nContext: {hint.strip() or 'N/A'}\nOptions: {options}\n")
    text = text.replace("Question: ", "")
    return f"{text}\n<image>" if has_image else text


def format_answer(output_format: str, letter: str, lecture: str, solution: str) -> str:
    if output_format == "A":
        return letter
    if output_format == "LEA":
        return _squeeze(f"Answer: {lecture} {solution} The answer is {letter}.").replace("Answer: ", "")
    raise ValueError(f"unknown ScienceQA output format {output_format!r}")


def problem_metadata(pid: str, problem: dict) -> dict[str, Any]:
    """Per-category fields for scoring: subject (NAT/SOC/LAN), context modality (TXT/IMG/NO), grade band."""
    grade = int("".join(ch for ch in str(problem.get("grade", "")) if ch.isdigit()) or 0)
    has_text = bool((problem.get("hint") or "").strip())
    has_image = problem.get("image") is not None
    return {
        "subject": SUBJECTS.get(problem.get("subject", ""), problem.get("subject", "")),
        "context_modality": "IMG" if has_image else ("TXT" if has_text else "NO"),
        "has_text_context": has_text,
        "has_image": has_image,
        "grade": grade,
        "grade_band": "G1-6" if 1 <= grade <= 6 else ("G7-12" if grade >= 7 else ""),
        "answer": LETTERS[int(problem["answer"])],
        "num_choices": len(problem["choices"]),
        "topic": problem.get("topic", ""),
        "category": problem.get("category", ""),
    }


def scienceqa_to_llava(
    problems: dict[str, dict],
    pids: list[str],
    prompt_format: str = "CQM-A",
) -> list[dict[str, Any]]:
    """Convert the problems `pids` into LLaVA records in `prompt_format` (see the module docstring)."""
    if prompt_format not in FORMATS:
        raise ValueError(f"prompt_format must be one of {list(FORMATS)}, got {prompt_format!r}.")
    input_format, output_format = prompt_format.split("-")
    records = []
    for pid in pids:
        if pid not in problems:
            raise KeyError(f"ScienceQA: pid {pid!r} is in pid_splits.json but not in problems.json.")
        problem = problems[pid]
        choices = list(problem["choices"])
        letters = _letters(choices, pid)
        answer_index = int(problem["answer"])
        if not 0 <= answer_index < len(choices):
            raise ValueError(
                f"ScienceQA problem {pid}: answer index {answer_index} outside its {len(choices)} choices."
            )
        has_image = problem.get("image") is not None
        formatter = format_cqm if input_format == "CQM" else format_qcm
        human = formatter(problem["question"], problem.get("hint") or "", choices, has_image)
        answer = format_answer(
            output_format, letters[answer_index], problem.get("lecture", ""), problem.get("solution", "")
        )
        record: dict[str, Any] = {"id": pid}
        if has_image:
            record["image"] = f"{pid}/{problem['image']}"
        record["conversations"] = [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]
        record.update(problem_metadata(pid, problem))
        records.append(record)
    return records


def convert_scienceqa(
    base_dir: str | Path,
    split: str,
    prompt_format: str = "CQM-A",
    output: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Read `problems.json` and `pid_splits.json` from `base_dir` and convert `split` (train / val / test / ...).

    Images are referenced as `<pid>/image.png`, relative to ScienceQA's `images/<split>` folder. Writes a LLaVA JSON
    file to `output` when given.
    """
    base_dir = Path(base_dir)
    for name in ("problems.json", "pid_splits.json"):
        if not (base_dir / name).is_file():
            raise FileNotFoundError(f"ScienceQA: {base_dir / name} not found.")
    problems = json.loads((base_dir / "problems.json").read_text())
    splits = json.loads((base_dir / "pid_splits.json").read_text())
    if split not in splits:
        raise ValueError(f"ScienceQA: split {split!r} not in pid_splits.json (has {sorted(splits)}).")
    records = scienceqa_to_llava(problems, splits[split], prompt_format)
    if output is not None:
        Path(output).write_text(json.dumps(records, ensure_ascii=False, indent=1))
    return records
