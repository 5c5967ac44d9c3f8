"""The front door (issue 27): a README read in minutes, and documentation whose links hold."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_LIMIT = 12 * 1024  # bytes: a five-minute read; topics live in docs/
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _pages():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_readme_stays_short():
    assert (ROOT / "README.md").stat().st_size <= README_LIMIT


def test_every_link_of_the_readme_and_docs_names_a_file_of_this_repository():
    broken = []
    for page in _pages():
        for target in LINK.findall(page.read_text()):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if ROOT not in path.parents or not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_readme_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.name != "index.md" and f"docs/{p.name}" not in readme] == []


def test_the_readme_gives_the_ci_test_command():
    """CI runs the README's test command (.ci/run's last line: install && pytest ...)."""
    command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1].split("&& ", 1)[1]
    assert command.startswith("python -m pytest") and command in (ROOT / "README.md").read_text()
