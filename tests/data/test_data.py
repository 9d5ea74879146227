"""Deterministic batching and the sprite dataset."""

from __future__ import annotations

import pytest
import torch

from purestep.data import epoch_order, iterate_batches, make_sprites, num_batches


def test_epoch_order_is_a_function_of_seed_and_epoch():
    a = epoch_order(100, seed=1, epoch=2)
    assert torch.equal(a, epoch_order(100, seed=1, epoch=2))
    assert torch.equal(a.sort().values, torch.arange(100))
    assert not torch.equal(a, epoch_order(100, seed=1, epoch=3))
    assert not torch.equal(a, epoch_order(100, seed=2, epoch=2))
    torch.manual_seed(0)
    b = epoch_order(100, seed=1, epoch=2)
    assert torch.equal(a, b), "the global RNG must not matter"


def test_iterate_batches_covers_every_example_once():
    x, y = torch.arange(10).float(), torch.arange(10)
    got = list(iterate_batches((x, y), 3, seed=0, epoch=0))
    assert [len(b[1]) for b in got] == [3, 3, 3, 1] and num_batches(10, 3) == 4
    assert torch.equal(torch.cat([b[1] for b in got]).sort().values, y)
    assert all(torch.equal(bx.long(), by) for bx, by in got)
    assert len(list(iterate_batches((x, y), 3, drop_last=True))) == 3 == num_batches(10, 3, True)
    rest = list(iterate_batches((x, y), 3, start=2))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(rest, got[2:], strict=True))
    plain = list(iterate_batches((x,), 5, shuffle=False))
    assert torch.equal(plain[0][0], torch.arange(5).float())


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (((torch.zeros(3), torch.zeros(4)), 2), r"tensors\[1\] has length 4"),
        (((torch.zeros(3),), 0), "batch_size must be a positive int"),
        (((), 2), "at least one tensor"),
    ],
)
def test_iterate_batches_errors(args, match):
    with pytest.raises(ValueError, match=match):
        list(iterate_batches(*args))


def test_sprites():
    x, y = make_sprites(200, seed=3)
    assert x.shape == (200, 64) and y.shape == (200,) and x.dtype == torch.float32
    assert set(y.tolist()) == {0.0, 1.0}
    x2, y2 = make_sprites(200, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    clean, _labels = make_sprites(50, seed=0, noise=0.0)
    area = clean.sum(1)
    assert area.min() > 4, "every sprite has a visible shape"
    with pytest.raises(ValueError, match="n must be a positive int"):
        make_sprites(0)
