"""Files written whole or not at all: a crash, a kill or a full disk never leaves a half-written
file under the real name, and the file that was there before survives a failed write.

``atomic_write(path, write)`` calls ``write(file)`` on a temporary file in ``path``'s folder,
flushes it to disk and renames it over ``path``; the rename is atomic on POSIX and Windows.
"""

import contextlib
import os
import tempfile


def atomic_write(path, write):
    """Write ``path`` through ``write(file)``, a function filling a binary file object; returns
    ``path``.

    The new file keeps the permissions of the one it replaces (0o644 for a new file). On any
    error the temporary file is removed and whatever was at ``path`` stays as it was; an
    ``OSError`` (a full disk, a file too large, no permission) is raised again naming ``path``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                                                 suffix=".tmp")
    except OSError as error:
        raise _naming(error, path) from None
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp makes the file private to its owner; keep the permissions of the file replaced.
        os.chmod(temporary, os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644)
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise _naming(error, path) from error
        raise
    # The rename itself is durable only once the folder is flushed (not possible everywhere).
    with contextlib.suppress(OSError, AttributeError):
        folder_descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder_descriptor)
        finally:
            os.close(folder_descriptor)
    return path


def _naming(error, path):
    """``error`` as an OSError of the same kind whose message names ``path`` and what was kept.
    (The error of a failed write names no file, or the temporary one.)"""
    kept = "the file already there was left as it was" if os.path.exists(path) else "nothing was written"
    message = f"cannot write {path}: {error.strerror or error}; {kept}"
    return OSError(error.errno, message) if error.errno is not None else OSError(message)
