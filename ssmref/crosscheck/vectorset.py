"""A vectors directory as one unit: content hashes, the set id, and replacing a whole set at once.

Every case file is listed in the manifest with the SHA-256 of its bytes (``"sha256"``), and the
manifest holds a ``"set_id"``: the first 16 hex digits of the SHA-256 of the dtype and the sorted
``(file, sha256)`` pairs, so the same cases with the same bytes always have the same id and any
other set has another.  The checker refuses a case file whose hash does not match, and results
that record another set id (a port records the id it read as ``_set_id`` in each results file).

Writing never touches the directory in place: the new set is built in a fresh sibling directory
(``.<name>.vectors-<pid>-<hex>``), then exchanged with the old one in one ``renameat2``
(``RENAME_EXCHANGE``) where the kernel has it, or by two renames where it has not.  A process
killed at any point leaves the old set or the new one, never a mix (with two renames, between
them, no directory at all: the checker then says the directory does not exist).  Builds left by
killed processes are removed by the next successful write.
"""

import ctypes
import ctypes.util
import hashlib
import os
import re
import secrets
import shutil

from ssmref.crosscheck.files import VectorsError

_STAGING = ".vectors-"
_HEX = re.compile(r"[0-9a-f]{64}")


def file_hash(path):
    """The SHA-256 of a file's bytes, as 64 hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def set_id(dtype, entries):
    """The id of a set of vectors: 16 hex digits of the SHA-256 of ``dtype`` and the sorted
    ``(file, sha256)`` of its ``entries``."""
    text = dtype + "\n" + "".join(f"{e['file']} {e['sha256']}\n"
                                  for e in sorted(entries, key=lambda e: e["file"]))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def check_hashes(manifest, path):
    """``VectorsError`` unless the manifest's hashes and set id are well formed and agree; a
    manifest without them (written before they existed) passes, and reads as set id ``None``."""
    has = ["sha256" in c for c in manifest["cases"]]
    if not any(has) and "set_id" not in manifest:
        return None
    if not all(has) or "set_id" not in manifest:
        raise VectorsError(f"{path}: some cases have a 'sha256' and some not, or 'set_id' is "
                           f"missing: the manifest was edited; rewrite the vectors")
    for c in manifest["cases"]:
        if not isinstance(c["sha256"], str) or not _HEX.fullmatch(c["sha256"]):
            raise VectorsError(f"{path}: case {c['name']}: 'sha256' must be 64 hex digits")
    if manifest["set_id"] != set_id(manifest["dtype"], manifest["cases"]):
        raise VectorsError(f"{path}: 'set_id' {manifest['set_id']!r} does not match the cases' "
                           f"hashes: the manifest was edited; rewrite the vectors")
    return manifest["set_id"]


def verify_file(entry, path):
    """``VectorsError`` unless the file at ``path`` has the hash its manifest ``entry`` lists."""
    if "sha256" in entry and file_hash(path) != entry["sha256"]:
        raise VectorsError(f"case {entry['name']}: {path} does not match the manifest's sha256: "
                           f"the file was changed or belongs to another set of vectors; "
                           f"rewrite them (python -m ssmref vectors)")


def existing_set(out_dir, read_manifest):
    """What ``out_dir`` holds before a write: ``None`` (missing or empty) or its manifest;
    ``ValueError`` if it holds anything but one set of vectors (files its manifest does not
    list, no readable manifest), which a write would lose."""
    if not os.path.lexists(out_dir):
        return None
    if os.path.islink(out_dir) or not os.path.isdir(out_dir):
        raise ValueError(f"{out_dir} exists and is not a directory (a symbolic link is not "
                         f"replaced either)")
    if inside_any(os.getcwd(), [out_dir]) is not None:
        raise ValueError(f"{out_dir} holds the current directory; the set is replaced as a "
                         f"whole: write it from outside, or into a subdirectory")
    names = sorted(os.listdir(out_dir))
    if not names:
        return None
    try:
        manifest = read_manifest(out_dir)
    except VectorsError as e:
        raise ValueError(f"{out_dir} holds {names[0]} but no readable vectors manifest "
                         f"({' '.join(str(e).split())}); write the vectors into an empty or new "
                         f"directory") from None
    listed = {c["file"] for c in manifest["cases"]} | {"manifest.json"}
    for name in names:
        path = os.path.join(out_dir, name)
        if name not in listed or os.path.islink(path) or not os.path.isfile(path):
            raise ValueError(f"{out_dir} holds {name}, which its vectors manifest does not list "
                             f"(or which is not a regular file); the directory is replaced as "
                             f"a whole, so it is not written: move {name} away or use another "
                             f"directory")
    return manifest


def staging_dir(out_dir):
    """A new, empty sibling directory of ``out_dir`` to build a set in (mode 755)."""
    parent, base = os.path.split(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    path = os.path.join(parent, f".{base}{_STAGING}{os.getpid()}-{secrets.token_hex(4)}")
    os.mkdir(path, 0o755)
    os.chmod(path, 0o755)
    return path


def _exchange(a, b):
    """Swap two directories atomically (Linux ``renameat2(RENAME_EXCHANGE)``); ``False`` where
    the system has no such call."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc != 0:
        err = ctypes.get_errno()
        if err in (22, 38, 95):                  # EINVAL, ENOSYS, EOPNOTSUPP: not supported here
            return False
        raise OSError(err, os.strerror(err), b)
    return True


def swap_in(staging, out_dir):
    """Make the complete set in ``staging`` the contents of ``out_dir`` in one step, remove the
    old set, and remove builds left by processes that no longer run."""
    parent, base = os.path.split(os.path.abspath(out_dir))
    if not os.path.lexists(out_dir):
        os.rename(staging, out_dir)
    elif _exchange(staging, out_dir):
        shutil.rmtree(staging)
    else:                                        # two renames: old set, then new set
        old = staging + ".old"
        os.rename(out_dir, old)
        os.rename(staging, out_dir)
        shutil.rmtree(old)
    for stale in _stale_builds(parent, base):
        shutil.rmtree(stale, ignore_errors=True)


def _stale_builds(parent, base):
    pattern = re.compile(r"\." + re.escape(base) + re.escape(_STAGING) + r"(\d+)-[0-9a-f]+(\.old)?$")
    out = []
    for name in os.listdir(parent):
        m = pattern.match(name)
        if m and int(m.group(1)) != os.getpid():
            try:
                os.kill(int(m.group(1)), 0)
            except ProcessLookupError:
                out.append(os.path.join(parent, name))
            except (PermissionError, OverflowError, ValueError):
                pass
    return out


def inside_any(path, directories):
    """The first of ``directories`` that ``path`` would be written inside (after resolving
    links), or ``None``."""
    target = os.path.realpath(path)
    for d in directories:
        root = os.path.realpath(d)
        if os.path.commonpath([target, root]) == root:
            return d
    return None
