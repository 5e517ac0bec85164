"""Which files a run describes: folders (their images, by suffix) and files named one by one,
each under a key that names its output (the file name, so it must be unique in a run)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

IMAGE_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}
OTHER = "application/octet-stream"  # the server reads the format from the bytes anyway


@dataclass(frozen=True)
class ImageFile:
    path: Path

    @property
    def key(self) -> str:
        return self.path.name

    @property
    def content_type(self) -> str:
        return IMAGE_TYPES.get(self.path.suffix.lower(), OTHER)


def find_images(folder: Path) -> list[Path]:
    """The folder's images (by suffix), sorted by name so runs are repeatable."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_TYPES)


def listed_paths(list_file: Path) -> list[Path]:
    """One path per line; blank lines and ``#`` comments are ignored."""
    lines = (line.strip() for line in list_file.read_text().splitlines())
    return [Path(line) for line in lines if line and not line.startswith("#")]


def collect(paths: Iterable[Path]) -> list[ImageFile]:
    """Folders give their images; a file is taken whatever its suffix (the server judges it),
    and a missing one is kept, to be reported as unreadable. The same file twice counts once;
    two files of one name are refused, since both would write ``<name>.npy``."""
    images: dict[Path, ImageFile] = {}
    for path in paths:
        for one in find_images(path) if path.is_dir() else [path]:
            images.setdefault(one.resolve(), ImageFile(one))
    by_key: dict[str, ImageFile] = {}
    for image in images.values():
        clash = by_key.setdefault(image.key, image)
        if clash is not image:
            raise ValueError(f"{clash.path} and {image.path} would both be saved as {image.key}")
    return list(images.values())
