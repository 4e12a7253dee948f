"""Write an image folder (OUT/{train,val,test}/<class>/*.png) from MNIST digits, for trying the
image-folder recipes (22-vgg16-transfer-digits.toml) without a photo dataset:

    python experiments/make_digit_folder.py digits-3-8 --classes 3,8

The digits come from fmprune's cached MNIST (fetched on first use); the images are drawn with a
seeded permutation, from the training split for train/val and the test split for test."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fmprune.data import load_splits

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write(out: Path, classes: list[int], counts: dict[str, int], seed: int) -> None:
    splits = load_splits()
    g = torch.Generator().manual_seed(seed)
    sources = {"train": splits.train, "val": splits.train, "test": splits.test}
    for digit in classes:
        pool = {name: (s.labels == digit).nonzero().flatten() for name, s in sources.items()}
        pool = {name: idx[torch.randperm(len(idx), generator=g)] for name, idx in pool.items()}
        offset = {"train": 0, "val": counts["train"], "test": 0}
        for name, n in counts.items():
            folder = out / name / NAMES[digit]
            folder.mkdir(parents=True, exist_ok=True)
            for i, index in enumerate(pool[name][offset[name]:offset[name] + n].tolist()):
                pixels = (sources[name].images[index, 0].numpy() * 255).round().astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--classes", default="3,8", help="digits, one class each (default: 3,8)")
    parser.add_argument("--train", type=int, default=300, help="training images per class (default: 300)")
    parser.add_argument("--val", type=int, default=100, help="validation images per class (default: 100)")
    parser.add_argument("--test", type=int, default=100, help="test images per class (default: 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw (default: 0)")
    args = parser.parse_args()
    write(args.out, [int(c) for c in args.classes.split(",")], {"train": args.train, "val": args.val, "test": args.test},
          args.seed)


if __name__ == "__main__":
    main()
