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


def _command_lines():
    """Every `autotaper ...` line of the README's and docs' bash blocks (continuations joined,
    comments and shell redirections cut), with its page."""
    import shlex

    for page in _pages():
        fence = None
        pending = ""
        for line in page.read_text().splitlines():
            if line.startswith("```"):
                fence = None if fence is not None else line[3:].strip()
                continue
            if fence not in ("bash", "sh"):
                continue
            line = pending + line
            if line.rstrip().endswith("\\"):
                pending = line.rstrip()[:-1] + " "
                continue
            pending = ""
            words = shlex.split(line, comments=True)
            for start, word in enumerate(words):
                if word == "autotaper" or (word == "-m" and start + 1 < len(words) and words[start + 1] == "autotaper"):
                    args = words[start + (2 if word == "-m" else 1):]
                    for stop in ("&&", "|", ">", "2>", ";"):
                        args = args[:args.index(stop)] if stop in args else args
                    yield page.relative_to(ROOT), args
                    break


def test_every_command_line_in_the_readme_and_docs_parses():
    """The docs cannot drift from the CLI: each `autotaper ...` line they show is one the parser
    accepts (parsed only: nothing runs)."""
    from autotaper.cli import UsageError, build_parser

    lines = list(_command_lines())
    assert len(lines) >= 30  # the collector finds them (40 on 2026-12-02)
    refused = []
    for page, args in lines:
        try:
            build_parser().parse_args(args)
        except (UsageError, SystemExit) as e:
            refused.append(f"{page}: autotaper {' '.join(args)} ({e})")
    assert refused == []
