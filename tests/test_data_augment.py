"""Batch augmentation: identity at zero magnitudes, one resample, flip and crop statistics."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from lrkit.data import augment
from lrkit.data.augment import AugConfig, BatchTransform, random_matrices, sampling_grid

CPU = torch.device("cpu")
NO_NORM = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_identity_when_all_magnitudes_are_zero() -> None:
    x = torch.randint(0, 256, (4, 3, 20, 20), dtype=torch.uint8, generator=gen())
    out = BatchTransform(size=20, aug=AugConfig.none(), stats=NO_NORM)(x, gen())
    torch.testing.assert_close(out, x.float() / 255, atol=1e-5, rtol=0)
    identity = torch.eye(3).repeat(4, 1, 1)
    assert torch.equal(random_matrices(4, AugConfig.none(), gen(), CPU), identity)


def test_sampling_grid_matches_affine_grid_for_affine_maps() -> None:
    theta = torch.tensor([[[0.8, -0.2, 0.1], [0.3, 0.9, -0.2]]])
    m = torch.cat([theta, torch.tensor([[[0.0, 0.0, 1.0]]])], dim=1)
    expected = F.affine_grid(theta, [1, 3, 7, 7], align_corners=False)
    torch.testing.assert_close(sampling_grid(m, 7), expected)


def test_one_resampling_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"grid_sample": 0, "interpolate": 0}
    real_grid_sample, real_interpolate = F.grid_sample, F.interpolate

    def counting_grid_sample(*args, **kwargs):
        calls["grid_sample"] += 1
        return real_grid_sample(*args, **kwargs)

    def counting_interpolate(*args, **kwargs):
        calls["interpolate"] += 1
        return real_interpolate(*args, **kwargs)

    monkeypatch.setattr(augment.F, "grid_sample", counting_grid_sample)
    monkeypatch.setattr(augment.F, "interpolate", counting_interpolate)
    x = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8, generator=gen())
    out = BatchTransform(size=24)(x, gen())
    assert out.shape == (8, 3, 24, 24) and out.dtype == torch.float32
    assert calls == {"grid_sample": 1, "interpolate": 0}
    BatchTransform(size=24, train=False)(x, gen())  # validation: one resize, no sampling grid
    assert calls == {"grid_sample": 1, "interpolate": 1}


def test_flips_half_of_the_images_exactly() -> None:
    x = torch.zeros(400, 3, 8, 8, dtype=torch.uint8)
    x[..., 4:] = 255  # dark left half, bright right half
    cfg = replace(AugConfig.none(), flip=True)  # flips only
    out = BatchTransform(size=8, aug=cfg, stats=NO_NORM)(x, gen(3))
    flipped = out[:, 0, 0, 0] > 0.5  # bright on the left: mirrored
    mirrored = torch.where(flipped.view(-1, 1, 1, 1), x.flip(-1), x).float() / 255
    torch.testing.assert_close(out, mirrored, atol=1e-5, rtol=0)
    assert 0.4 < flipped.float().mean().item() < 0.6


def test_crop_area_and_aspect_stay_in_range() -> None:
    m = augment.crop_matrices(2000, AugConfig(min_scale=0.5), gen(1), CPU)
    width, height, cx, cy = m[:, 0, 0], m[:, 1, 1], m[:, 0, 2], m[:, 1, 2]
    area, aspect = width * height, width / height
    assert area.min() >= 0.5 - 1e-6 and area.max() <= 1 + 1e-6
    assert aspect.min() >= 3 / 4 - 1e-5 and aspect.max() <= 4 / 3 + 1e-5
    # the crop stays inside the image and is centred on average
    assert ((cx.abs() + width) <= 1 + 1e-6).all() and ((cy.abs() + height) <= 1 + 1e-6).all()
    assert abs(cx.mean().item()) < 0.02 and abs(area.mean().item() - 0.75) < 0.03


def test_rotation_and_warp_bounds() -> None:
    cfg = AugConfig()
    r = augment.rotate_matrices(1000, cfg, gen(2), CPU)
    angles = torch.rad2deg(torch.atan2(r[:, 1, 0], r[:, 0, 0])).abs()
    assert angles.max() <= 10 + 1e-4 and angles.max() > 9
    w = augment.warp_matrices(1000, cfg, gen(2), CPU)[:, 2, :2].abs()
    assert w.max() <= 0.2 and w.max() > 0.19


def test_zoom_shrinks_the_sampled_span() -> None:
    z = augment.zoom_matrices(2000, AugConfig(max_zoom=2.0), gen(4), CPU)[:, 0, 0]
    assert z.min() >= 0.5 - 1e-6 and z.max() <= 1.0
    assert math.isclose(z.mean().item(), math.log(2), abs_tol=0.02)  # E[1/z], z ~ U(1, 2)


def test_same_generator_seed_same_batch() -> None:
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=gen())
    t = BatchTransform(size=16)
    assert torch.equal(t(x, gen(5)), t(x, gen(5)))
    assert not torch.equal(t(x, gen(5)), t(x, gen(6)))


def test_lighting_ranges_and_values_stay_inside() -> None:
    scale, shift = augment.lighting_params(4000, 0.2, gen(1), CPU)
    assert scale.min() >= 0.8 - 1e-6 and scale.max() <= 1.25 + 1e-6
    brightness = shift - 0.5 * (1 - scale)
    assert brightness.abs().max() <= 0.1 + 1e-6 and brightness.abs().max() > 0.09
    x = torch.full((64, 3, 8, 8), 250, dtype=torch.uint8)
    cfg = AugConfig(max_lighting=0.2)
    out = BatchTransform(size=8, aug=cfg, stats=NO_NORM)(x, gen(2))
    assert out.min() >= 0 and out.max() <= 1 and out.std() > 0.01


def test_normalize_uses_the_given_stats() -> None:
    mean, std = augment.IMAGENET_STATS
    x = (torch.tensor(mean) + torch.tensor(std)).view(1, 3, 1, 1)
    out = augment.normalize(x, augment.IMAGENET_STATS)
    torch.testing.assert_close(out, torch.ones(1, 3, 1, 1))


@pytest.mark.parametrize("train", [True, False])
def test_float_input_is_left_untouched(train: bool) -> None:
    x = torch.randint(0, 256, (4, 3, 16, 16), generator=gen()).float()
    before = x.clone()
    out = BatchTransform(size=16, train=train)(x, gen())
    assert torch.equal(x, before) and out.data_ptr() != x.data_ptr()
    torch.testing.assert_close(out, BatchTransform(size=16, train=train)(x.byte(), gen()))


def test_sampling_grid_divides_by_w_for_perspective_maps() -> None:
    m = torch.tensor([[[0.9, 0.1, 0.05], [-0.2, 1.1, 0.0], [0.15, -0.1, 1.0]]])
    grid = sampling_grid(m, 5)
    centres = torch.linspace(-0.8, 0.8, 5)
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    mapped = torch.einsum("ij,hwj->hwi", m[0], torch.stack([xs, ys, torch.ones_like(xs)], -1))
    torch.testing.assert_close(grid[0], mapped[..., :2] / mapped[..., 2:])


def test_light_and_normalize_is_clamp_then_normalize() -> None:
    x = torch.rand(6, 3, 5, 5, generator=gen()) * 1.4 - 0.2  # some values outside [0, 1]
    scale, shift = torch.rand(6, generator=gen(1)) + 0.5, torch.rand(6, generator=gen(2)) - 0.5
    ref = (x * scale.view(6, 1, 1, 1) + shift.view(6, 1, 1, 1)).clamp(0, 1)
    ref = augment.normalize(ref, augment.IMAGENET_STATS)
    out = augment.light_and_normalize(x.clone(), scale, shift, augment.IMAGENET_STATS)
    torch.testing.assert_close(out, ref)


def test_validation_resize_of_uint8_is_within_a_grey_level_of_the_float_resize() -> None:
    g = torch.Generator().manual_seed(5)
    pixels = torch.randint(0, 256, (2, 3, 60, 60), dtype=torch.uint8, generator=g)
    valid = BatchTransform(size=24, train=False, stats=((0.0,) * 3, (1.0,) * 3))
    from_uint8 = valid(pixels.contiguous(memory_format=torch.channels_last), g)
    from_float = valid(pixels.float(), g)
    assert from_uint8.dtype == torch.float32 and from_uint8.shape == (2, 3, 24, 24)
    difference = (from_uint8 - from_float).abs()
    assert difference.max() <= 1 / 255 and difference.mean() < 0.4 / 255  # rounded, not shifted
    assert not torch.equal(from_uint8, from_float)  # the uint8 kernel really ran
