import torch

from bioplausible.augment import augment


def reference(x, shape, k, flip, dy, dx, mask):
    C, H, W = shape
    img = x.view(-1, C, H, W)
    out = torch.empty_like(img)
    pad = torch.nn.functional.pad(img, (k, k, k, k))
    for i in range(img.shape[0]):
        crop = pad[i][:, dy[i]:dy[i] + H, dx[i]:dx[i] + W]
        out[i] = crop.flip(2) if (flip and mask[i]) else crop
    return out.reshape(x.shape[0], -1)


def test_shift_and_flip_match_a_plain_loop():
    x = torch.rand(9, 2 * 5 * 6)
    shape, k = (2, 5, 6), 2
    g1 = torch.Generator().manual_seed(3)
    got = augment(x, shape, k, True, g1)
    g2 = torch.Generator().manual_seed(3)
    mask = torch.rand(9, generator=g2) < 0.5
    dy = torch.randint(0, 2 * k + 1, (9, 1), generator=g2)[:, 0]
    dx = torch.randint(0, 2 * k + 1, (9, 1), generator=g2)[:, 0]
    assert torch.equal(got, reference(x, shape, k, True, dy, dx, mask))


def test_no_augmentation_is_identity_and_shift_keeps_pixels():
    x = torch.rand(4, 28 * 28)
    g = torch.Generator().manual_seed(0)
    assert augment(x, (1, 28, 28), 0, False, g) is x
    y = augment(x, (1, 28, 28), 0, True, g)
    assert torch.allclose(y.sum(1), x.sum(1))
