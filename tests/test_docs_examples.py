"""Every `starlight ...` example in docs/instruments-alignment.md parses, as README.md's do
(tests/test_readme_examples.py): the command exists and takes each option as written. Nothing runs."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from test_readme_examples import parse

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = ["instruments-alignment.md"]


def examples(page: str) -> list[tuple[int, list[str]]]:
    out, in_console = [], False
    for number, line in enumerate((DOCS / page).read_text().splitlines(), 1):
        if line.startswith("```"):
            in_console = line.strip() == "```console"
        elif in_console and line.startswith("$ starlight "):
            out.append((number, shlex.split(line[2:], comments=True)[1:]))
    return out


EXAMPLES = [(page, n, argv) for page in PAGES for n, argv in examples(page)]


def test_the_instruments_page_shows_each_new_option():
    flat = [" ".join(argv) for _, _, argv in EXAMPLES]
    for option in ("--method activation", "--align activation", "--renorm repair", "--definition endpoint-mean"):
        assert any(option in line for line in flat), option


@pytest.mark.parametrize("page, line, argv", EXAMPLES, ids=[f"{p}:{n}" for p, n, _ in EXAMPLES])
def test_each_docs_example_parses(page, line, argv):
    try:
        parse(argv)
    except Exception as e:
        if not hasattr(e, "format_message"):
            raise
        pytest.fail(f"docs/{page}:{line}: starlight {shlex.join(argv)}: {e.format_message()}")
