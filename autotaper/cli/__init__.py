"""The `autotaper` command line, a thin shell: each command parses its flags, calls one
library function, and prints. Commands live by group (`model`, `search`, `ladder`) and
import what they need when they run, so `autotaper --help` stays fast. Errors of
autotaper's own (`autotaper.errors`) end with one line on stderr and exit status 2 for bad
input, 1 for a fault; anything else is a bug and shows its traceback (exit 70).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from autotaper.cli import ladder as _ladder
from autotaper.cli import model as _model
from autotaper.cli import search as _search
from autotaper.cli._common import EXIT_BUG, EXIT_USAGE, UsageError, _load_space, _Parser  # noqa: F401 - the API
from autotaper.errors import AutotaperError


# -- wiring -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autotaper", description="Search how a transformer should spread its "
                     "parameters across depth, at a fixed parameter and FLOP budget.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _model.add_commands(sub)
    _search.add_commands(sub)
    _ladder.add_commands(sub)
    return parser


def _problem_lines(e: AutotaperError) -> str:
    """An error as the lines to print: one per problem when a validation found several
    (`ProblemsError`), each naming its field and standing on its own."""
    problems = getattr(e, "problems", None)
    if not problems:
        return f"autotaper: error: {e.strerror if isinstance(e, OSError) and e.strerror else e}"
    return "\n".join(f"autotaper: error: {e.where}: {line}" for line in problems)


def _version() -> str:
    from autotaper import __version__

    return f"autotaper {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = None

    def say(text: str) -> None:  # an error, with every secret of the storage URLs in play masked
        from autotaper.search.storage import scrub

        urls = (getattr(args, "storage", None), os.environ.get("AUTOTAPER_STORAGE"), *(argv or sys.argv[1:]))
        print(scrub(text, *urls), file=sys.stderr)

    try:
        args = parser.parse_args(argv)
        if getattr(args, "storage", "") is None and os.environ.get("AUTOTAPER_STORAGE"):
            args.storage, args.storage_from_env = os.environ["AUTOTAPER_STORAGE"], True  # keeps passwords off argv
        return int(args.func(args) or 0)
    except UsageError as e:
        say(f"error: {e}")
        return EXIT_USAGE
    except AutotaperError as e:  # ours: bad input exits 2, a fault of the machine or a server 1
        say(_problem_lines(e))
        return e.exit_code
    except RecursionError:
        say("autotaper: error: input nested too deeply")
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("autotaper: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`, `| grep -m1`): end quietly, as git and coreutils do.
        # Later writes (the interpreter's final flush included) go to /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13  # the shell's status for a writer killed by SIGPIPE
    except OSError as e:  # permission, a folder where a file goes, a full disk: the path and why, one line
        where = f"{e.filename}: " if e.filename else ""
        say(f"autotaper: error: {where}{e.strerror or e}")
        return 1
    except MemoryError:
        say("autotaper: error: out of memory (the input asks for more than this machine has)")
        return 1
    except Exception:  # noqa: BLE001 - not ours: a bug, shown whole
        import traceback

        say(traceback.format_exc().rstrip())
        say(f"autotaper: internal error: this is a bug in autotaper {_version().split()[-1]}, not in your input; "
            "please report it with the command and the traceback above")
        return EXIT_BUG
