"""Training-time augmentation on flattened image batches: random translations and horizontal flips.

Translations pad with zeros (black on [0, 1] data, the mean on standardised data) and crop back, a
different offset per example; both use the run's own seeded generator.
"""

import torch


def augment(x: torch.Tensor, shape, max_shift: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    if not max_shift and not flip:
        return x
    B = x.shape[0]
    C, H, W = shape
    img = x.view(B, C, H, W)
    dev = x.device
    if max_shift:
        k = max_shift
        pad = torch.nn.functional.pad(img, (k, k, k, k))
        dy = torch.randint(0, 2 * k + 1, (B,), generator=gen, device=gen.device).to(dev)
        dx = torch.randint(0, 2 * k + 1, (B,), generator=gen, device=gen.device).to(dev)
        rows = (dy[:, None] + torch.arange(H, device=dev))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(W, device=dev))[:, None, None, :]
        b = torch.arange(B, device=dev)[:, None, None, None]
        c = torch.arange(C, device=dev)[None, :, None, None]
        img = pad[b, c, rows, cols]
    if flip:
        mask = (torch.rand(B, generator=gen, device=gen.device) < 0.5).to(dev)
        img = torch.where(mask[:, None, None, None], img.flip(3), img)
    return img.reshape(B, -1)
