"""The documentation stays true to the repository: every relative link and every repository path it names exists, and
every `llava-hf` command it shows parses with the real command line (nothing is run)."""

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted([ROOT / "README.md", ROOT / "tests" / "README.md", *(ROOT / "docs").glob("*.md")])
PATH_PREFIXES = ("src/", "recipes/", "bench/", "docs/", "tests/", "model_cards/")

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE_CODE = re.compile(r"`([^`]+)`")  # a span may wrap onto the next line
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+)$", re.M)
PREFIXES_PATTERN = "|".join(re.escape(prefix) for prefix in PATH_PREFIXES)
PREFIXED_PATH = re.compile(r"(?<![\w./-])((?:" + PREFIXES_PATTERN + r")[\w./{},-]*)")


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def without_code_blocks(text: str) -> str:
    return FENCE.sub("", text)


def code_blocks(text: str, language: str | None = None) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if language is None or lang == language]


def expand_braces(path: str) -> list[str]:
    """`recipes/offline/stage{1,2}.yaml` -> both files."""
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    return [
        expanded
        for option in match.group(1).split(",")
        for expanded in expand_braces(path[: match.start()] + option + path[match.end() :])
    ]


def is_placeholder(path: str) -> bool:
    """`recipes/<recipe>.yaml`, `src/llava_hf/hub/templates/...`: not a file."""
    return any(char in path for char in "<>*") or "..." in path


def named_paths(text: str) -> set[str]:
    """Repository paths in inline code spans and in code blocks."""
    candidates = []
    for span in INLINE_CODE.findall(without_code_blocks(text)):
        candidates += PREFIXED_PATH.findall(span)
    for block in code_blocks(text):
        candidates += PREFIXED_PATH.findall(block)
    paths = set()
    for candidate in candidates:
        candidate = candidate.rstrip(".,:;)")
        if not is_placeholder(candidate):
            paths.update(expand_braces(candidate))
    return paths


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(heading) for heading in HEADING.findall(without_code_blocks(path.read_text()))}


def test_the_documents_exist():
    names = {relative(path) for path in DOCUMENTS}
    assert {"README.md", "tests/README.md", "docs/model.md", "docs/training.md"} <= names


@pytest.mark.parametrize("document", DOCUMENTS, ids=relative)
def test_named_paths_exist(document):
    missing = sorted(path for path in named_paths(document.read_text()) if not (ROOT / path.rstrip("/")).exists())
    assert not missing, f"{relative(document)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=relative)
def test_relative_links_resolve(document):
    broken = []
    for target in LINK.findall(without_code_blocks(document.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        file_part, _, fragment = target.partition("#")
        linked = (document.parent / file_part).resolve() if file_part else document
        if not linked.exists() or (fragment and linked.suffix == ".md" and fragment not in anchors(linked)):
            broken.append(target)
    assert not broken, f"{relative(document)} has broken links: {broken}"


def test_readme_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    unlinked = [relative(page) for page in sorted((ROOT / "docs").glob("*.md")) if f"]({relative(page)}" not in readme]
    assert not unlinked, f"README.md does not link {unlinked}"


@pytest.fixture(scope="module")
def parser():
    from llava_hf.cli import build_parser

    return build_parser()


def subcommands(parser) -> dict:
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def shown_commands(text: str) -> list[str]:
    """Every line of a ```bash block that runs `llava-hf`, continuation lines joined."""
    commands = []
    for block in code_blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("llava-hf"):
                commands.append(line.strip())
    return commands


@pytest.mark.parametrize("document", DOCUMENTS, ids=relative)
def test_shown_commands_parse(document, parser, capsys):
    bad = []
    for command in shown_commands(document.read_text()):
        try:
            _, unknown = parser.parse_known_args(shlex.split(command, comments=True)[1:])
        except SystemExit:
            bad.append((command, capsys.readouterr().err.strip().splitlines()[-1:]))
            continue
        if unknown:
            bad.append((command, f"unknown arguments {unknown}"))
    assert not bad, f"{relative(document)} shows commands that do not parse: {bad}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=relative)
def test_named_commands_exist(document, parser):
    """`llava-hf eval shapes` in the text: `eval` is a command and `shapes` one of its subcommands."""
    commands = subcommands(parser)
    wrong = []
    for span in INLINE_CODE.findall(without_code_blocks(document.read_text())):
        for match in re.finditer(r"(?:^|[\s|])llava-hf ([a-z][\w-]*)(?: ([a-z][\w-]*))?", span):
            name, sub = match.groups()
            known = subcommands(commands[name]) if name in commands else None
            if known is None or (sub and known and sub not in known):
                wrong.append(span)
    assert not wrong, f"{relative(document)} names commands that do not exist: {wrong}"
