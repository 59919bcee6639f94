"""Deterministic archives and the ``.build/`` tree: the zips (sorted entries, fixed
timestamps, fixed permissions), SageMaker's ``sourcedir.tar.gz``, their unzipped sizes and
entry hashes, and the atomic writes and pruning every artifact under ``.build/`` goes through.

The base of the ``layers`` modules: :mod:`layers.resolve`, :mod:`layers.trim` and
:mod:`layers.build` import from it, it imports none of them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR_NAME = ".build"

# Bump when the build procedure changes in a way the key does not otherwise see.
FORMAT = 1
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold
_SHARED_LIBRARY = re.compile(r"\.so(\.\d+)*$")


class BuildError(RuntimeError):
    """An artifact could not be built; the message says why."""


def _source_tree(directory: Path) -> Iterator[tuple[str, Path]]:
    """Files under ``directory`` minus bytecode and hidden files (editor swap files, .DS_Store)."""
    if not directory.is_dir():
        raise BuildError(f"no such package: {directory}")
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part == "__pycache__" or part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() and path.suffix not in {".pyc", ".pyo"}:
            yield relative.as_posix(), path


# ---------------------------------------------------------------------------------------------
# SageMaker training source

TRAIN_SHIM = (
    '"""SageMaker runs `python train.py` here (sagemaker_program); the code is in functions/."""\n'
    "import sys\n"
    "from functions.training.train import main\n"
    "sys.exit(main())\n"
)


def training_source_tarball(*, root: Path = ROOT, build_dir: Path | None = None) -> Path:
    """``.build/training/sourcedir.tar.gz``: ``train.py`` (a shim running
    ``functions.training.train.main``), ``requirements.txt`` (functions/training's, installed by
    the training toolkit before it runs train.py), ``functions/{__init__.py,shared,training}``.
    Deterministic: sorted, mtime 0, uid/gid 0, no gzip name or timestamp."""
    functions = root / "functions"
    entries: list[tuple[str, bytes]] = [
        ("train.py", TRAIN_SHIM.encode()),
        ("requirements.txt", (functions / "training" / "requirements.txt").read_bytes()),
        ("functions/__init__.py", (functions / "__init__.py").read_bytes()),
    ]
    for sub in ("shared", "training"):
        entries += [
            (f"functions/{sub}/{rel}", path.read_bytes())
            for rel, path in _source_tree(functions / sub)
        ]
    entries.sort()
    directories = sorted(
        {str(parent) for name, _ in entries for parent in PurePosixPath(name).parents} - {"."}
    )
    raw = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for name in directories:
            tar.addfile(_tarinfo(name, tarfile.DIRTYPE, 0o755, 0))
        for name, content in entries:
            tar.addfile(_tarinfo(name, tarfile.REGTYPE, 0o644, len(content)), io.BytesIO(content))
    target = _build(root, build_dir) / "training" / "sourcedir.tar.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.is_file() or target.read_bytes() != raw.getvalue():
        _write_atomic(target, raw.getvalue())
    return target


def _tarinfo(name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


# ---------------------------------------------------------------------------------------------
# Deterministic zips, sizes


def zip_tree(tree: Path, target: Path, *, prefix: str = "") -> Path:
    """Zip every file under ``tree`` as ``<prefix>/<relative path>``, deterministically."""
    files = []
    for path in tree.rglob("*"):
        if path.is_symlink():
            raise BuildError(f"symlink in a layer tree: {path}")
        if path.is_file():
            relative = path.relative_to(tree).as_posix()
            files.append((f"{prefix}/{relative}" if prefix else relative, path))
    _write_zip(target, sorted(files))
    return target


def _write_zip(target: Path, files: Sequence[tuple[str, Path]]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w") as archive:
            for arcname, path in sorted(files):
                info = zipfile.ZipInfo(arcname, date_time=ZIP_DATE)
                info.create_system = 3  # unix, so external_attr carries the mode
                mode = 0o755 if _SHARED_LIBRARY.search(arcname) else 0o644
                info.external_attr = (0o100000 | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes(), compresslevel=6)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def unzipped_size(path: Path) -> int:
    """Bytes once extracted: a zip's or tarball's members, or a directory's files."""
    if path.is_dir():
        return _tree_size(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return sum(info.file_size for info in archive.infolist() if not info.is_dir())
    with tarfile.open(path) as tar:
        return sum(member.size for member in tar.getmembers() if member.isfile())


def asset_hash(path: Path) -> str:
    """sha256 over a zip's entries (name, mode, content), not its compressed bytes: the same on
    any machine even where zlib compresses differently. For CDK's ``asset_hash``."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(path) as archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            digest.update(f"{info.filename}\0{info.external_attr >> 16:o}\0".encode())
            digest.update(hashlib.sha256(archive.read(info)).digest())
    return digest.hexdigest()


def _tree_size(tree: Path) -> int:
    if tree.is_file():
        return tree.stat().st_size
    return sum(p.lstat().st_size for p in tree.rglob("*") if p.is_file() or p.is_symlink())


def _build(root: Path, build_dir: Path | None) -> Path:
    return build_dir if build_dir is not None else root / BUILD_DIR_NAME


def _write_atomic(target: Path, content: str | bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content.encode() if isinstance(content, str) else content)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def _prune(directory: Path, package: str, *, keep: str) -> None:
    """Drop the superseded builds of one package (same name, another key)."""
    for stale in directory.glob(f"{package}-*"):
        if (
            stale.is_file()
            and stale.stem != keep
            and re.fullmatch(r"[0-9a-f]{16}", stale.stem[len(package) + 1 :])
        ):
            stale.unlink()
