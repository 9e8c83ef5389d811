"""Training-time augmentation on flattened image batches: random translations and horizontal flips.

Translations pad with zeros (black on [0, 1] data, the mean on standardised data) and crop back, a
different offset per example; both use the run's own seeded generator. Shift and flip are one
``torch.gather`` over the padded images.
"""

import torch


def augment(x: torch.Tensor, shape, max_shift: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    if not max_shift and not flip:
        return x
    B = x.shape[0]
    C, H, W = shape
    dev = x.device
    k = max_shift
    img = x.view(B, C, H, W)
    if k:
        img = torch.nn.functional.pad(img, (k, k, k, k))
    Hp, Wp = H + 2 * k, W + 2 * k
    cols = torch.arange(W, device=dev).expand(B, W)
    if flip:
        mask = (torch.rand(B, generator=gen, device=gen.device) < 0.5).to(dev)
        cols = torch.where(mask[:, None], W - 1 - cols, cols)
    rows = torch.arange(H, device=dev).expand(B, H)
    if k:
        dy = torch.randint(0, 2 * k + 1, (B, 1), generator=gen, device=gen.device).to(dev)
        dx = torch.randint(0, 2 * k + 1, (B, 1), generator=gen, device=gen.device).to(dev)
        rows = rows + dy
        cols = cols + dx
    index = (rows[:, :, None] * Wp + cols[:, None, :]).reshape(B, 1, H * W).expand(B, C, H * W)
    return torch.gather(img.reshape(B, C, Hp * Wp), 2, index).reshape(B, C * H * W)
