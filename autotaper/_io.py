"""Files in and out, safely: atomic writes whose files follow the umask, and reads that refuse
what is not a regular file, what is too large, and YAML or JSON built to exhaust memory.

Light on purpose (no torch, no numpy): every layer of the package may import it.

Writes go to a temporary name beside the target and are renamed into place, so a reader (or
a kill) never sees half a file; `tempfile` creates 0600 files and 0700 folders, which would
hide a run's results from the teammates of a shared folder, so the modes are set back to
what `open()` gives under the process's umask. Reads check a path's kind and size before
the first byte: a FIFO, a device (`/dev/zero`) or a folder is refused with one line, never
read forever or reported as a traceback.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from autotaper.errors import InputError

TEXT_LIMIT = 8 * 2**20  # a space, spec or JSON record: far above any real one
MAX_DEPTH = 64  # nesting of a YAML or JSON document
MAX_NODES = 200_000  # YAML nodes after alias expansion (an alias bomb expands to billions)


def umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic set-and-restore
    os.umask(mask)
    return mask


def fix_mode(path: str | Path, *, folder: bool = False) -> None:
    """Give a file or folder made by `tempfile` the mode `open()` / `mkdir()` would have given."""
    os.chmod(path, (0o777 if folder else 0o666) & ~umask())


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a synced temporary file and a rename; the file's mode
    follows the umask. On failure no temporary file is left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(path))
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        fix_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fix_tree(root: str | Path) -> None:
    """`fix_mode` for a folder and everything in it (libraries such as safetensors write
    their files 0600)."""
    root = Path(root)
    fix_mode(root, folder=True)
    for path in root.rglob("*"):
        if not path.is_symlink():
            fix_mode(path, folder=path.is_dir())


def make_temp_dir(parent: str | Path, prefix: str) -> Path:
    """A temporary folder in `parent` (to be renamed into place) with the umask's mode."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    fix_mode(tmp, folder=True)
    return tmp


def regular_file(path: str | Path, field: str, *, limit: int | None = TEXT_LIMIT) -> Path:
    """`path` if it is an existing regular file of at most `limit` bytes; InputError naming
    `field` otherwise (a folder, a FIFO, a device, a socket, a missing path)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"{field}: {str(path)!r} does not exist") from None
    except OSError as e:
        raise InputError(f"{field}: {str(path)!r} cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{field}: {str(path)!r} is {kind(st.st_mode)}, not a regular file")
    if limit is not None and st.st_size > limit:
        raise InputError(f"{field}: {str(path)!r} is {st.st_size:,} bytes, over the {limit:,} this file may hold")
    return path


def kind(mode: int) -> str:
    """What a stat mode names, in words."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_text(path: str | Path, field: str, *, limit: int = TEXT_LIMIT) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes (see `regular_file`)."""
    path = regular_file(path, field, limit=limit)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{field}: {str(path)!r} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise InputError(f"{field}: {str(path)!r} cannot be read ({e.strerror})") from None


def _yaml_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader that refuses duplicate keys, deep nesting and alias expansion past
        MAX_NODES (each alias is counted at its full expanded size)."""

        depth = 0

        def compose_node(self, parent, index):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise yaml.YAMLError(f"nested deeper than {MAX_DEPTH} levels")
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:
                    continue  # an unhashable key: the base class reports it
                if duplicate:
                    raise yaml.YAMLError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1}): "
                                         "the second would silently replace the first")
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return Loader


def _expanded_size(node, memo: dict) -> int:
    """Nodes of a composed YAML graph with every alias expanded (memoised per node)."""
    import yaml

    found = memo.get(id(node))
    if found is not None:
        return found
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(n, memo) for n in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = min(size, MAX_NODES + 1)
    return memo[id(node)]


def load_yaml(text: str, field: str) -> Any:
    """A YAML document parsed safely: no duplicate keys, at most MAX_DEPTH levels and MAX_NODES
    nodes once aliases are expanded. InputError naming `field` otherwise."""
    import yaml

    loader = _yaml_loader()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_NODES:
            raise InputError(f"{field}: expands to over {MAX_NODES:,} values (YAML aliases); refused")
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()
        raise InputError(f"{field}: not valid YAML ({' '.join(first[:1]) or type(e).__name__})") from None
    except RecursionError:
        raise InputError(f"{field}: nested deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


def load_json(text: str, field: str) -> Any:
    """JSON parsed with a depth limit; InputError naming `field` otherwise."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise InputError(f"{field}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:
        raise InputError(f"{field}: not valid JSON ({e})") from None
    if _depth(value) > MAX_DEPTH:
        raise InputError(f"{field}: nested deeper than {MAX_DEPTH} levels")
    return value


def _depth(value: Any, level: int = 1) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max([level] + [_depth(v, level + 1) for v in value.values()])
    if isinstance(value, list):
        return max([level] + [_depth(v, level + 1) for v in value])
    return level


def read_json(path: str | Path, field: str, *, limit: int = TEXT_LIMIT) -> Any:
    """A JSON file (regular, at most `limit` bytes, depth-limited)."""
    return load_json(read_text(path, field, limit=limit), field)
