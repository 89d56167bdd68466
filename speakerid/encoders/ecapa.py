"""ECAPA-TDNN: emphasised channel attention, propagation and aggregation (Desplanques et al., 2020).

Written from the paper and SpeechBrain's published description of its ``ECAPA_TDNN``, sized
as their ``spkrec-ecapa-voxceleb`` release (C = 1024, 192-d) so that its weights load strictly
(``bench/convert_ecapa.py``):

- a TDNN layer: kernel 5, C channels;
- three SE-Res2Net blocks (kernel 3, dilations 2, 3, 4): a 1x1 TDNN, a Res2Net layer that
  cuts the channels into 8 groups and runs each group's dilated TDNN on its input plus the
  previous group's output (the first group passes through), a 1x1 TDNN, squeeze-excitation
  (channel gates from the mean over time, 128 hidden units), and a residual connection;
- multi-layer feature aggregation: the three blocks' outputs side by side, a 1x1 TDNN (3C);
- attentive statistics pooling with global context: per-channel attention over time computed
  from each step together with the whole input's mean and standard deviation, then the
  attention-weighted mean and standard deviation (6C);
- batch norm and a dense layer to the embedding.

Each "TDNN" is convolution -> ReLU -> batch norm, in that order. Convolutions keep the
length by reflecting the input at both ends (SpeechBrain's "same" padding), so a reading
needs more frames than the largest padding (4); every real input has hundreds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # model.py imports this module to register the body
    from speakerid.encoders.config import ModelConfig

STEM_KERNEL = 5  # the first TDNN layer's kernel
BLOCKS = ((3, 2), (3, 3), (3, 4))  # (kernel, dilation) of the three SE-Res2Net blocks
RES2NET_SCALE = 8  # groups a Res2Net layer cuts the channels into
SE_CHANNELS = 128  # squeeze-excitation's hidden width
ATTENTION_CHANNELS = 128  # attentive pooling's hidden width
STATS_EPS = 1e-12  # variance floor in the (attentive) statistics


class TDNN(nn.Module):
    """Dilated convolution with reflected-edge 'same' padding, ReLU, batch norm."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> None:
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.conv = nn.Conv1d(
            cin, cout, kernel, dilation=dilation, padding=pad, padding_mode="reflect"
        )
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(torch.relu(self.conv(x)))


class Res2Net(nn.Module):
    """Hierarchical residual groups: ``(B, C, T)`` -> ``(B, C, T)``.

    Group 0 passes through; group 1 goes through its TDNN; group i > 1 goes through its TDNN
    after the previous group's output is added to it.
    """

    def __init__(self, channels: int, kernel: int, dilation: int) -> None:
        super().__init__()
        if channels % RES2NET_SCALE:
            raise ValueError(f"channels ({channels}) must be a multiple of {RES2NET_SCALE}")
        width = channels // RES2NET_SCALE
        self.branches = nn.ModuleList(
            TDNN(width, width, kernel, dilation) for _ in range(RES2NET_SCALE - 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.chunk(x, RES2NET_SCALE, dim=1)
        out = [groups[0]]
        y = self.branches[0](groups[1])
        out.append(y)
        for branch, group in zip(self.branches[1:], groups[2:], strict=True):
            y = branch(group + y)
            out.append(y)
        return torch.cat(out, dim=1)


class SqueezeExcite(nn.Module):
    """Channel gates from the mean over time: ``x * sigmoid(W2 relu(W1 mean(x)))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv1d(channels, SE_CHANNELS, 1)
        self.excite = nn.Conv1d(SE_CHANNELS, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(x.mean(dim=-1, keepdim=True)))))
        return x * gate


class SERes2NetBlock(nn.Module):
    """1x1 TDNN, Res2Net, 1x1 TDNN, squeeze-excitation, plus the block's input."""

    def __init__(self, channels: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.tdnn_in = TDNN(channels, channels)
        self.res2net = Res2Net(channels, kernel, dilation)
        self.tdnn_out = TDNN(channels, channels)
        self.se = SqueezeExcite(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.se(self.tdnn_out(self.res2net(self.tdnn_in(x))))


def weighted_stats(x: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation over time under ``weights`` summing to 1: two ``(B, C)``."""
    mean = (weights * x).sum(dim=-1)
    var = (weights * (x - mean.unsqueeze(-1)).square()).sum(dim=-1)
    return mean, var.clamp_min(STATS_EPS).sqrt()


class AttentiveStatsPool(nn.Module):
    """Channel- and context-dependent attentive statistics: ``(B, C, T)`` -> ``(B, 2C)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.tdnn = TDNN(3 * channels, ATTENTION_CHANNELS)
        self.attend = nn.Conv1d(ATTENTION_CHANNELS, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        uniform = torch.full_like(x[:, :1], 1.0 / x.shape[-1])  # (B, 1, T)
        mean, std = weighted_stats(x, uniform)
        context = torch.cat(
            [x, mean.unsqueeze(-1).expand_as(x), std.unsqueeze(-1).expand_as(x)], dim=1
        )
        weights = torch.softmax(self.attend(torch.tanh(self.tdnn(context))), dim=-1)
        return torch.cat(weighted_stats(x, weights), dim=-1)


class ECAPABody(nn.Module):
    """``(B, n_mels, frames)`` mean-normalised dB fbank -> ``(B, embedding_dim)``.

    ``cfg.channels`` is C (1024 in the released model; a multiple of 8) and
    ``cfg.embedding_dim`` the output size; the other widths are the model's own (above).
    """

    def __init__(self, n_features: int, cfg: ModelConfig) -> None:
        super().__init__()
        c = cfg.channels
        self.stem = TDNN(n_features, c, STEM_KERNEL)
        self.blocks = nn.ModuleList(SERes2NetBlock(c, k, d) for k, d in BLOCKS)
        self.aggregate = TDNN(len(BLOCKS) * c, len(BLOCKS) * c)
        self.pool = AttentiveStatsPool(len(BLOCKS) * c)
        self.pool_bn = nn.BatchNorm1d(2 * len(BLOCKS) * c)
        self.embed = nn.Linear(2 * len(BLOCKS) * c, cfg.embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        x = self.aggregate(torch.cat(outs, dim=1))
        return self.embed(self.pool_bn(self.pool(x)))
