"""Image folders as in-memory tensors: ``DIR/train/<class>/*.jpg|png`` (the layout torchvision's
ImageFolder and the cats-and-dogs tutorials use), with optional ``DIR/val`` and ``DIR/test`` of the
same classes (each with images of every class: an accuracy over some classes would mislead); a
missing one is cut off the training images with a seeded permutation.

Every image is converted to RGB (or grey for a one-channel shape), its shorter side resized to
256/224 of the target size and the centre cropped to it (the standard ImageNet evaluation
transform), then normalised with the ImageNet mean and standard deviation, which is what
pretrained torchvision weights expect: these images are therefore not in [0, 1] like the other
datasets'. Classes are numbered in sorted order of their folder names.

An image that cannot be decoded is reported by file name and skipped (the default), or stops the
load, as ``corrupt`` says. The command line hands both settings, and the model's input shape, to
sweep workers as arguments (:class:`fmprune.data.DataRequest`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .splits import Split, Splits, default_val_size

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SHAPE = (3, 224, 224)
RESIZE_RATIO = 256 / 224
CORRUPT_POLICIES = ("skip", "fail")
SPLIT_SEED = 4242


class CorruptImageWarning(UserWarning):
    """An image of an image folder could not be decoded and was skipped."""


def _images(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def is_image_folder(path: Path) -> bool:
    """``path/train`` holds class folders with at least one image file."""
    train = path / "train"
    if not path.is_dir() or not train.is_dir():
        return False
    return any(d.is_dir() and _images(d) for d in train.iterdir())


def _pil():
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise DataError("reading image folders needs Pillow: pip install 'fmprune[images]'") from None
    return Image, ImageOps


def decode(file: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """One image as C×H×W float32, resized, centre-cropped and normalised (see the module doc)."""
    image_module, ops = _pil()
    channels, height, width = shape
    with image_module.open(file) as img:
        img = ops.exif_transpose(img)
        img = img.convert("L" if channels == 1 else "RGB")
        short = round(max(height, width) * RESIZE_RATIO)
        scale = short / min(img.size)
        size = (max(width, round(img.size[0] * scale)), max(height, round(img.size[1] * scale)))
        img = img.resize(size, image_module.Resampling.BILINEAR)
        left, top = (size[0] - width) // 2, (size[1] - height) // 2
        img = img.crop((left, top, left + width, top + height))
        array = np.asarray(img, dtype=np.float32) / 255.0
    array = array[None] if channels == 1 else array.transpose(2, 0, 1)
    mean = np.array([np.mean(IMAGENET_MEAN)] if channels == 1 else IMAGENET_MEAN, dtype=np.float32)
    std = np.array([np.mean(IMAGENET_STD)] if channels == 1 else IMAGENET_STD, dtype=np.float32)
    return (array - mean[:, None, None]) / std[:, None, None]


def _policy(corrupt: str | None) -> str:
    policy = corrupt or "skip"
    if policy not in CORRUPT_POLICIES:
        raise DataError(f"corrupt-image policy {policy!r}: expected one of {', '.join(CORRUPT_POLICIES)}")
    return policy


def _shape(image_shape: tuple[int, int, int] | None) -> tuple[int, int, int]:
    return tuple(int(d) for d in image_shape) if image_shape else DEFAULT_SHAPE


def _read_split(directory: Path, classes: list[str], shape: tuple[int, int, int], policy: str) -> Split:
    present = sorted(d.name for d in directory.iterdir() if d.is_dir())
    unknown = sorted(set(present) - set(classes))
    if unknown:
        raise DataError(f"{directory}: class folders {', '.join(unknown)} are not in {directory.parent / 'train'} "
                        f"(classes: {', '.join(classes)})")
    if directory.name != "train":   # a class missing from val or test would be measured on the others only
        lacking = [c for c in classes if not (directory / c).is_dir() or not _images(directory / c)]
        if lacking:
            raise DataError(f"{directory}: no images of class{'es' if len(lacking) > 1 else ''} {', '.join(lacking)}; "
                            f"val and test need every class of {directory.parent / 'train'}, or leave the split "
                            "out and it is cut off the training images")
    arrays, labels = [], []
    for label, name in enumerate(classes):
        folder = directory / name
        for file in (_images(folder) if folder.is_dir() else []):
            try:
                arrays.append(decode(file, shape))
            except (OSError, ValueError, SyntaxError) as e:   # what Pillow raises for broken files
                if policy == "fail":
                    raise DataError(f"{file}: cannot be read as an image ({type(e).__name__}: {e}); remove it, or "
                                    "skip such files with --corrupt-images skip") from None
                warnings.warn(f"{file}: cannot be read as an image ({type(e).__name__}); skipped", CorruptImageWarning,
                              stacklevel=2)
                continue
            labels.append(label)
    if not arrays:
        return Split(torch.zeros(0, *shape), torch.zeros(0, dtype=torch.long))
    return Split(torch.from_numpy(np.stack(arrays)), torch.tensor(labels, dtype=torch.long))


def _take(split: Split, idx: torch.Tensor) -> Split:
    return Split(split.images[idx], split.labels[idx])


def input_note(classes: list[str] | None = None) -> str:
    """What a model trained on this folder takes: the ImageNet transform of the module doc, and
    the class order when it is known."""
    order = f"; classes in sorted folder-name order: {', '.join(classes)}" if classes else ""
    return ("float32 N x C x H x W: each image's shorter side resized to 256/224 of H and centre-cropped, "
            f"scaled to [0, 1], then normalised with the ImageNet mean {list(IMAGENET_MEAN)} and std "
            f"{list(IMAGENET_STD)}{order}")


def load_image_folder(path: Path, image_shape: tuple[int, int, int] | None = None, val_size: int | None = None,
                      corrupt: str | None = None) -> Splits:
    """The splits of the image folder at ``path`` (see the module doc), images of ``image_shape``
    (default: ``FMPRUNE_IMAGE_SHAPE``, else 3×224×224). ``val_size`` sizes the validation (and, when missing, test) split cut off
    the training images (default: a twelfth, at most 5,000)."""
    shape = _shape(image_shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise DataError(f"image folders are read as 1 or 3 channels, not input shape {'x'.join(map(str, shape))}")
    policy = _policy(corrupt)
    train_dir = path / "train"
    folders = sorted(d for d in train_dir.iterdir() if d.is_dir())
    empty = [d.name for d in folders if not _images(d)]
    if empty and len(folders) - len(empty) >= 2:   # one class without images: name it, not "not in train"
        raise DataError(f"{train_dir}: class folder(s) {', '.join(empty)} hold no images "
                        f"({', '.join(sorted(IMAGE_SUFFIXES))}); add some or remove the folder")
    classes = [d.name for d in folders if d.name not in empty]
    if len(classes) < 2:
        raise DataError(f"{train_dir}: found {len(classes)} class folder with images; an image folder needs at least "
                        "two (train/<class>/*.jpg)")
    train = _read_split(train_dir, classes, shape, policy)
    given = {name: _read_split(path / name, classes, shape, policy) for name in ("val", "test") if (path / name).is_dir()}
    missing = [name for name in ("test", "val") if name not in given]
    if missing:
        cut = val_size if val_size is not None else default_val_size(len(train))
        if cut < 1 or len(train) <= cut * len(missing):
            raise DataError(f"{train_dir}: only {len(train)} readable training images, too few to hold out "
                            f"{' and '.join(missing)} split{'s' if len(missing) > 1 else ''} of {max(cut, 1)}")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(SPLIT_SEED))
        for i, name in enumerate(missing):
            given[name] = _take(train, order[i * cut:(i + 1) * cut])
        train = _take(train, order[len(missing) * cut:].sort().values)
    for name, split in given.items():
        if len(split) == 0:
            raise DataError(f"{path / name}: no readable images")
    return Splits(train=train, val=given["val"], test=given["test"], source=str(path), classes=len(classes),
                  augmentation=("crop", "flip"), name=f"imagefolder:{path.name}", input_note=input_note(classes))
