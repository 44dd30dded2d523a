"""Image folders: ``root/<class name>/.../<image file>``, one sub-folder per class.

The classes are the sub-folder names in sorted order (or the declared ``classes``); ``x``
is the list of absolute image paths, sorted by class then by relative path, and decoded
later by the backbone's ``prepare`` (which also resizes, so mixed image sizes are fine).
Hidden files (``.DS_Store``) and OS thumbnails are skipped; any other file that is not a
readable image is reported by name instead of being dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from transferkit.data.files import IMAGE_SUFFIXES
from transferkit.data.labels import encode_labels
from transferkit.data.types import Dataset
from transferkit.errors import DataError

IGNORED_NAMES = {"thumbs.db", "desktop.ini"}


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name.lower() not in IGNORED_NAMES


def _class_dirs(root: Path) -> list[Path]:
    entries = sorted(p for p in root.iterdir() if _visible(p))
    loose = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if loose:
        raise DataError(
            f"{len(loose)} image(s) lie directly in the folder, outside any class sub-folder",
            where=str(loose[0]),
            fix="put every image in a sub-folder named after its class (root/<class>/img.png)",
        )
    dirs = [p for p in entries if p.is_dir()]
    if not dirs:
        raise DataError(
            "the folder has no class sub-folders",
            where=str(root),
            fix="arrange images as root/<class name>/<image file>",
        )
    return dirs


def check_image(path: Path, *, open_file: bool = True) -> None:
    """Raise :class:`DataError` unless ``path`` has an image suffix (and PIL can read it)."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(
            f"not an image file (suffix {path.suffix or 'none'!r})",
            where=str(path),
            fix=f"remove it from the image folder; image suffixes: {sorted(IMAGE_SUFFIXES)}",
        )
    if not open_file:
        return
    try:
        with Image.open(path) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"unreadable image file: {exc}",
            where=str(path),
            fix="replace or delete the corrupted file",
        ) from None


def load_image_folder(
    root: Path, *, classes: Sequence[Any] | None = None, verify_images: bool = True
) -> Dataset:
    """An image Dataset whose ``x`` is the sorted list of file paths under ``root``.

    Args:
        root: the folder holding one sub-folder per class (nested folders are searched).
        classes: declared class names; a sub-folder outside them is an error.
        verify_images: open every file with PIL to catch corrupt or non-image files now
            rather than in the middle of training.
    """
    paths: list[str] = []
    labels: list[str] = []
    for class_dir in _class_dirs(root):
        files = sorted(
            p
            for p in class_dir.rglob("*")
            if p.is_file() and all(_visible(Path(part)) for part in p.relative_to(class_dir).parts)
        )
        if not files:
            raise DataError(
                f"class folder {class_dir.name!r} holds no images",
                where=str(class_dir),
                fix="add images or remove the empty folder",
            )
        for f in files:
            check_image(f, open_file=verify_images)
            paths.append(str(f.resolve()))
            labels.append(class_dir.name)
    y, names = encode_labels(
        labels, classes=classes, where=str(root), row_name=lambda i: f"file {paths[i]}"
    )
    return Dataset(
        name=root.name, modality="image", x=paths, y=y, classes=names, meta={"source": str(root)}
    )
