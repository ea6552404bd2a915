"""CycleGAN's image pool: the discriminator sees a mix of new fakes and fakes from earlier steps."""

from __future__ import annotations

import torch
from torch import Tensor


class ImagePool:
    """Keeps up to ``size`` past fakes; each query swaps new images in with probability 1/2 (Shrivastava et al.)."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self.images: list[Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)  # own RNG, saved in checkpoints, for exact resume

    def query(self, images: Tensor) -> Tensor:
        """Return a batch like ``images``, some replaced by stored fakes."""
        if self.size == 0:
            return images.detach()
        out = []
        for image in images.detach():
            image = image.unsqueeze(0).clone()  # its own storage: a view would keep the whole batch it came from alive
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif torch.rand((), generator=self.generator).item() > 0.5:
                index = int(torch.randint(self.size, (), generator=self.generator))
                out.append(self.images[index].clone())
                self.images[index] = image
            else:
                out.append(image)
        return torch.cat(out)

    def state_dict(self) -> dict:
        """Stored fakes (on CPU) and RNG state."""
        images = torch.cat(self.images).cpu() if self.images else torch.zeros(0)
        return {"images": images, "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        """Restore what ``state_dict`` saved."""
        self.images = [img.unsqueeze(0).to(device) for img in state["images"]] if state["images"].numel() else []
        self.generator.set_state(state["rng"])
