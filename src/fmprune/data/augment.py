"""Training-time augmentation on whole batches of tensors, on whatever device they live.

The random draws (crop offsets, flips) come from a CPU generator the caller seeds, so a batch's
augmentation depends only on that seed: the same on CPU and GPU, and reproducible after a resume.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import DataError

AUGMENTATIONS = ("crop", "flip")


@dataclass(frozen=True)
class Augmentation:
    """Random crop after zero padding by ``crop_padding`` pixels (0: none), and a horizontal flip
    of half the images (``flip``), as in the standard CIFAR training recipe."""

    crop_padding: int = 0
    flip: bool = False

    @classmethod
    def from_names(cls, names: tuple[str, ...] | list[str], padding: int = 4) -> "Augmentation":
        unknown = sorted(set(names) - set(AUGMENTATIONS))
        if unknown:
            raise DataError(f"unknown augmentation {unknown[0]!r} (available: {', '.join(AUGMENTATIONS)})")
        return cls(crop_padding=padding if "crop" in names else 0, flip="flip" in names)

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip

    def names(self) -> list[str]:
        return [n for n, on in (("crop", self.crop_padding > 0), ("flip", self.flip)) if on]

    def to_dict(self) -> dict:
        return {"augment": self.names(), "crop_padding": self.crop_padding}

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augmented copies of ``images`` (N×C×H×W)."""
        if not self.active:
            return images
        n, _, h, w = images.shape
        out = images
        if self.crop_padding:
            p = self.crop_padding
            dy = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(images.device)
            dx = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(images.device)
            padded = F.pad(images, (p, p, p, p))
            rows = (dy[:, None] + torch.arange(h, device=images.device))[:, :, None]   # N×H×1
            cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, :]   # N×1×W
            batch = torch.arange(n, device=images.device)[:, None, None]
            out = padded[batch, :, rows, cols].permute(0, 3, 1, 2)   # advanced indexing puts C last
        if self.flip:
            flips = (torch.rand(n, generator=generator) < 0.5).to(images.device)
            out = torch.where(flips[:, None, None, None], out.flip(3), out)
        return out.contiguous()
