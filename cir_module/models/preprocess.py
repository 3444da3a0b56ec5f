"""Image preprocessing with Pillow and numpy only (no torch), reading the backbone's own
image-processor settings so that a checkpoint is preprocessed as it was trained."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["ImagePreprocessor"]


@dataclass(frozen=True)
class ImagePreprocessor:
    """Resize (shortest edge, then centre crop; or straight to a square), scale, normalise."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int = Image.Resampling.BICUBIC
    center_crop: bool = True

    @classmethod
    def from_hf(cls, processor: object) -> ImagePreprocessor:
        """Read the settings of a transformers ``CLIPImageProcessor`` / ``SiglipImageProcessor``."""
        size = processor.size
        center_crop = bool(getattr(processor, "do_center_crop", False))
        if center_crop:
            crop = processor.crop_size
            image_size = crop["height"] if isinstance(crop, dict) else int(crop)
        elif "shortest_edge" in size:
            image_size = size["shortest_edge"]
        else:
            image_size = size["height"]
        return cls(
            image_size=int(image_size),
            mean=tuple(float(v) for v in processor.image_mean),
            std=tuple(float(v) for v in processor.image_std),
            resample=int(processor.resample),
            center_crop=center_crop,
        )

    def _resize(self, image: Image.Image) -> Image.Image:
        side = self.image_size
        if not self.center_crop:
            return image.resize((side, side), resample=self.resample)
        width, height = image.size
        scale = side / min(width, height)
        new_w, new_h = max(side, round(width * scale)), max(side, round(height * scale))
        image = image.resize((new_w, new_h), resample=self.resample)
        left, top = (new_w - side) // 2, (new_h - side) // 2
        return image.crop((left, top, left + side, top + side))

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        """RGB PIL images -> float32 array ``[batch, 3, size, size]``."""
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        batch = np.empty((len(images), 3, self.image_size, self.image_size), dtype=np.float32)
        for i, image in enumerate(images):
            pixels = np.asarray(self._resize(image.convert("RGB")), dtype=np.float32) / 255.0
            batch[i] = ((pixels - mean) / std).transpose(2, 0, 1)
        return batch
