"""The front door (issue 27): a README read in minutes, and documentation whose links hold."""

import re
from pathlib import Path

import pytest

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


# The fenced Python examples of the README and docs/ run here, as written, on tiny settings:
# each replacement below turns a laptop-sized value into a seconds-sized one (and each is used
# by some example, so the table cannot outlive them). A block opts out with a first line
# `# docs-test: skip (why)`.
SKIP = re.compile(r"#\s*docs-test:\s*skip\b\s*(?:\((.*)\))?")
TINY_QUICKSTART = "tiny_quickstart.yaml"
TINY = {
    '"proxy-xs"': '"tiny"',
    "steps=300": "steps=4",
    "steps=150": "steps=4",
    "steps=20": "steps=4",
    "n_trials=20": "n_trials=3",
    "seeds=8": "seeds=2",
    '"search_spaces/quickstart.yaml"': f'"{TINY_QUICKSTART}"',
}


def python_blocks(pages=None):
    """(page, first line, code, why skipped or None) for every ```python block."""
    for page in pages or _pages():
        lines = page.read_text().splitlines()
        start = None
        for i, line in enumerate(lines):
            if start is None and line.strip() == "```python":
                start = i + 1
            elif start is not None and line.startswith("```"):
                code = "\n".join(lines[start:i]) + "\n"
                first = code.lstrip().splitlines()[0] if code.strip() else ""
                mark = SKIP.match(first)
                yield page, start + 1, code, (mark.group(1) or "") if mark else None
                start = None


def _tiny(code: str) -> tuple[str, set[str]]:
    used = {k for k in TINY if k in code}
    for k in used:
        code = code.replace(k, TINY[k])
    return code, used


def test_the_skip_marker_is_honoured_and_needs_a_reason(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("```python\n# docs-test: skip (needs a GPU)\nimport cuda_only\n```\n"
                    "```python\n# docs-test: skip\nx = 1\n```\n```python\nprint(1)\n```\n")
    assert [(line, why) for _, line, _, why in python_blocks([page])] == [(2, "needs a GPU"), (6, ""), (10, None)]


EXAMPLES = list(python_blocks())


def test_the_examples_are_collected_and_each_tiny_replacement_is_used():
    assert len(EXAMPLES) >= 4  # README, api, search, export (4 on 2026-12-02)
    used = set().union(*(_tiny(code)[1] for *_, code, _ in EXAMPLES))
    assert used == set(TINY)
    assert [f"{page.name}:{line}" for page, line, _, why in EXAMPLES if why == ""] == []  # a skip gives its reason


@pytest.mark.slow
@pytest.mark.parametrize("page,line,code,why", EXAMPLES,
                         ids=[f"{p.relative_to(ROOT)}:{line}" for p, line, _, _ in EXAMPLES])
def test_the_python_examples_of_the_readme_and_docs_run(page, line, code, why, tmp_path):
    """Each block runs in a fresh interpreter in an empty folder (so one block's registrations
    and studies are not another's), with the quickstart space shrunk to a tiny one."""
    import os
    import subprocess
    import sys

    import yaml

    from tests.helpers import micro_space

    if why is not None:
        pytest.skip(f"{page.name}:{line}: {why}")
    space = micro_space(None, name="quickstart", proxy={"steps": 4, "eval_every": 4},
                        search={"n_trials": 3, "confirm": {"top_k": 1, "seeds": 2}})
    del space["proxy"]["data"]  # the default corpus, as the quickstart
    (tmp_path / TINY_QUICKSTART).write_text(yaml.safe_dump(space))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-c", _tiny(code)[0]], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=400)
    assert proc.returncode == 0, f"{page.relative_to(ROOT)}:{line}\n{proc.stderr[-3000:]}"


def test_the_api_reference_documents_every_public_name():
    """docs/reference.md (mkdocstrings) names every class and function of each public package's
    `__all__`, by the module that defines it; CI's strict build fails on a path that moved."""
    import importlib

    page = (ROOT / "docs" / "reference.md").read_text()
    shown = set(re.findall(r"^::: (\S+)$", page, re.M))
    missing = []
    for package in ("autotaper", "autotaper.data", "autotaper.train", "autotaper.parametrization",
                    "autotaper.search", "autotaper.ladder"):
        module = importlib.import_module(package)
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj) and f"{obj.__module__}.{name}" not in shown:
                missing.append(f"{package}.{name}")
    assert missing == []
    assert len(shown) >= 80  # 85 on 2026-12-02
