"""fastai's classifier head for a pretrained body: concat pooling, two BatchNorm-dropout-linears.

    pool (max and avg) -> flatten -> BN -> dropout ps/2 -> linear 512 -> ReLU
                                  -> BN -> dropout ps   -> linear n_out

The linears have no bias (a BatchNorm comes right before each), and they start from Kaiming
normal weights. The layer order and indices are fastai's, so `head.4.weight` is the first
linear here as it is in a fastai model's head.
"""

from __future__ import annotations

import torch
from torch import nn


class ConcatPool2d(nn.Module):
    """Global max pool and global average pool side by side: (B, C, H, W) -> (B, 2C, 1, 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 2C, 1, 1): max first, then avg, as fastai orders them
        return torch.cat([x.amax(dim=(2, 3), keepdim=True), x.mean(dim=(2, 3), keepdim=True)], 1)


def new_head(
    n_features: int,
    n_out: int,
    lin_ftrs: int | None = 512,
    ps: float = 0.5,
    concat_pool: bool = True,
) -> nn.Sequential:
    """A fresh head for a body with `n_features` output channels and `n_out` classes.

    `lin_ftrs=None` drops the hidden layer (pool -> flatten -> BN -> dropout ps -> linear);
    `concat_pool=False` pools by average only, so the first BatchNorm sees `n_features`.
    """
    if n_features < 1 or n_out < 1:
        raise ValueError(
            f"new_head needs n_features >= 1 and n_out >= 1, got {n_features}, {n_out}"
        )
    if not 0.0 <= ps < 1.0:
        raise ValueError(f"the dropout probability ps must lie in [0, 1), got {ps}")
    pooled = 2 * n_features if concat_pool else n_features
    layers: list[nn.Module] = [
        ConcatPool2d() if concat_pool else nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),  # (B, pooled)
    ]
    if lin_ftrs is not None:
        layers += [
            nn.BatchNorm1d(pooled),
            nn.Dropout(ps / 2),
            nn.Linear(pooled, lin_ftrs, bias=False),
            nn.ReLU(inplace=True),
        ]
        pooled = lin_ftrs
    layers += [nn.BatchNorm1d(pooled), nn.Dropout(ps), nn.Linear(pooled, n_out, bias=False)]
    head = nn.Sequential(*layers)
    for module in head.modules():
        if isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight)
    return head
