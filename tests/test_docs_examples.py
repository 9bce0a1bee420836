"""The instruments' pages show each option they document in a runnable example. That every example parses,
on every page, is tests/test_readme_examples.py's; this file checks only that the examples are there."""

from __future__ import annotations

from test_readme_examples import EXAMPLES


def _examples_of(page: str) -> list[str]:
    return [" ".join(argv) for where, _, argv in EXAMPLES if where == page]


def test_the_alignment_page_shows_each_new_option():
    flat = _examples_of("docs/instruments-alignment.md")
    for option in ("--method activation", "--align activation", "--renorm repair", "--definition endpoint-mean"):
        assert any(option in line for line in flat), option


def test_the_landscape_page_shows_each_instrument():
    flat = _examples_of("docs/instruments-landscape.md")
    for command in ("sharpness", "plane", "curve", "landscapes"):
        assert any(line.split()[0] == command for line in flat if line), command
