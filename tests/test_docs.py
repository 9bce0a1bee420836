"""The docs stay true to the code: the command reference is what `--help` prints today, every relative link
points at something, every page is reachable from the README, and every module is named where a reader looks
for it (its package's docstring or the API pages). Nothing here imports torch."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
# Markdown a reader of the repository meets: the README, every docs page, the published results' index.
MARKDOWN = [ROOT / "README.md", *PAGES, DOCS / "results" / "README.md"]
# Pages another branch adds, whose links may dangle until it is merged (none now: every page is here).
PENDING: set[Path] = set()
# Where a module may be named besides its package's docstring.
API_PAGES = [DOCS / "engine-api.md", DOCS / "api.md", DOCS / "development.md"]


def _commands_doc():
    spec = importlib.util.spec_from_file_location("commands_doc", ROOT / "scripts" / "commands_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_command_reference_is_what_help_prints():
    doc = _commands_doc()
    assert doc.PAGE == DOCS / "cli.md"
    assert doc.PAGE.read_text() == doc.render(), "docs/cli.md is stale: run `python scripts/commands_doc.py` (or `make docs`)"


def test_the_command_reference_has_every_command():
    import typer

    from starcli.cli import app

    group = typer.main.get_command(app)
    text = (DOCS / "cli.md").read_text()
    assert len(group.commands) >= 20
    for name in group.commands:
        assert f"## starlight {name}\n" in text and f"Usage: starlight {name} " in text, name


def test_a_stale_command_reference_is_caught(tmp_path, monkeypatch):
    doc = _commands_doc()
    monkeypatch.setattr(doc, "PAGE", tmp_path / "cli.md")
    doc.PAGE.write_text(doc.render().replace("--epochs", "--epoch", 1))
    assert doc.main(["--check"]) == 1
    assert doc.main([]) == 0 and doc.main(["--check"]) == 0


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold no links
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_something(page):
    assert page.exists()
    for link in _links(page):
        if re.match(r"[a-z]+:", link):
            continue  # https:, mailto:
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if path in PENDING and not path.exists():
            continue
        assert path.exists(), f"{page.relative_to(ROOT)}: {link} points nowhere"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{page.relative_to(ROOT)}: {link}: no heading #{anchor}"


def test_the_readme_and_the_index_link_every_page():
    linked_from_readme = {(ROOT / link.partition("#")[0]).resolve() for link in _links(ROOT / "README.md")}
    linked_from_index = {(DOCS / link.partition("#")[0]).resolve() for link in _links(DOCS / "README.md")}
    for page in [*PAGES, *PENDING]:
        if page.name == "README.md":
            assert page in linked_from_readme
            continue
        assert page in linked_from_index, f"docs/README.md does not link {page.name}"
        assert page in linked_from_readme or page.name == "engine-api.md" and DOCS / "api.md" in linked_from_readme, (
            f"README.md does not link docs/{page.name}"
        )
    assert (DOCS / "results" / "README.md") in linked_from_readme


def _packages() -> dict[Path, str]:
    """Each package folder of the distribution → its dotted name (registry/ and recipes/ install under starcli)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = config.get("package-dir", {})
    out = {}
    for name in config["packages"]:
        folder = ROOT / mapped.get(name, name.replace(".", "/"))
        if (folder / "__init__.py").exists():
            out[folder] = name
    return out


def test_every_module_is_named_in_its_package_docstring_or_the_api_pages():
    api = "\n".join(p.read_text() for p in API_PAGES)
    packages = _packages()
    assert len(packages) >= 10
    unnamed = []
    for folder, dotted in packages.items():
        docstring = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
        modules = sorted(p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "__main__"))
        for name in modules:
            in_docstring = re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", docstring)
            path = f"{folder.relative_to(ROOT)}/{name}.py"
            # `name.py`, the module's path, its dotted name, or `name` / `name.function` in backticks
            n = re.escape(name)
            in_api = re.search(rf"(?<![\w/]){n}\.py\b|{re.escape(path)}|{re.escape(dotted)}\.{n}\b|`{n}[`.]", api)
            if not (in_docstring or in_api):
                unnamed.append(f"{dotted}.{name}")
    assert not unnamed, f"modules named neither in their package's docstring nor in docs/engine-api.md: {unnamed}"
