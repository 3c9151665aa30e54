"""Atomic file writes: nothing is ever left half-written.

:func:`atomic_open` yields a temporary file in the target's folder; when the ``with`` block ends
normally the file gets ordinary permissions (``0666 & ~umask``; ``mkstemp`` creates ``0600``) and is
renamed over the target (``os.replace``, atomic on POSIX); when it raises, the temporary file is removed
and the target is untouched. Every writer of the project (feature files, checkpoints, caches, atomic
dataset files, results) goes through it.
"""
import contextlib
import json
import os
import tempfile


def _default_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_open(path, mode="w", encoding="utf-8", newline=None, suffix=""):
    """``with atomic_open(path) as f: f.write(...)`` (``mode`` ``"w"`` or ``"wb"``)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": newline}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path, text):
    with atomic_open(path) as f:
        f.write(text)


def atomic_write_json(path, obj, indent=2):
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True, default=str))


def atomic_write_report(base, record, lines):
    """A benchmark's figures: ``record`` to ``<base>.json`` and the Markdown ``lines`` to ``<base>.md``."""
    atomic_write_json(base + ".json", record)
    atomic_write_text(base + ".md", "\n".join(lines) + "\n")
    return base + ".json", base + ".md"
