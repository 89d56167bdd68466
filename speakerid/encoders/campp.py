"""CAM++: a densely connected TDNN with context-aware masking (Wang et al., Interspeech 2023).

Written from the paper and 3D-Speaker's description of the model, sized as their released
"zh_en 16k common advanced" encoder so that its weights load strictly
(``bench/convert_campp.py``):

- a front convolution module (FCM): 2-D residual convolutions over the 80 fbank bins and
  time, which halve the frequency axis three times (80 -> 10 bins x 32 channels = 320);
- a TDNN layer, 128 channels, kernel 5, stride 2 in time (20-ms steps);
- three densely connected blocks of 12, 24 and 16 CAM layers (growth 32, bottleneck 4 x 32,
  kernel 3, dilations 1, 2, 2), each followed by a transition that halves the channels;
- batch norm + ReLU, mean and standard deviation over time, and a dense layer to 192 with a
  batch norm without affine parameters.

Each CAM layer multiplies its local convolution by a sigmoid mask computed from context: the
mean over the whole input plus the mean over the 100-step segment the frame falls in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # model.py imports this module to register the body
    from speakerid.encoders.config import ModelConfig

FCM_CHANNELS = 32  # width of the 2-D convolution front
FCM_FREQ_STRIDE = 8  # the FCM halves the frequency axis three times
TDNN_CHANNELS = 128  # first TDNN layer's output
GROWTH = 32  # channels each CAM layer adds to its block's concatenation
BOTTLENECK = 4 * GROWTH  # 1x1 bottleneck inside a CAM layer
BLOCKS = ((12, 1), (24, 2), (16, 2))  # (layers, dilation) of the three dense blocks
KERNEL = 3  # CAM layers' local convolution
SEGMENT_FRAMES = 100  # context masks pool over segments of this many 20-ms steps (2 s)
MASK_REDUCTION = 2  # the context mask's hidden layer is BOTTLENECK // 2 wide
STATS_EPS = 1e-2  # std of a single step is undefined; stats pooling uses this instead


class ResBlock2d(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut; ``stride`` applies to frequency."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.shortcut(x))


class FrontConv(nn.Module):
    """The FCM: ``(B, bins, T)`` -> ``(B, 32 * bins / 8, T)``, a 2-D view of the spectrum."""

    def __init__(self, n_bins: int) -> None:
        super().__init__()
        c = FCM_CHANNELS
        self.conv_in = nn.Conv2d(1, c, 3, padding=1, bias=False)
        self.bn_in = nn.BatchNorm2d(c)
        self.blocks = nn.Sequential(
            ResBlock2d(c, c, 2), ResBlock2d(c, c, 1), ResBlock2d(c, c, 2), ResBlock2d(c, c, 1)
        )
        self.conv_out = nn.Conv2d(c, c, 3, stride=(2, 1), padding=1, bias=False)
        self.bn_out = nn.BatchNorm2d(c)
        self.out_channels = c * (n_bins // FCM_FREQ_STRIDE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_in(self.conv_in(x.unsqueeze(1))))
        x = F.relu(self.bn_out(self.conv_out(self.blocks(x))))
        batch, channels, bins, frames = x.shape
        return x.reshape(batch, channels * bins, frames)


def spread_segments(values: torch.Tensor, frames: int, size: int = SEGMENT_FRAMES) -> torch.Tensor:
    """``(B, C, S)`` per-segment values -> ``(B, C, frames)``: each step gets its segment's."""
    batch, channels, segments = values.shape
    spread = values.unsqueeze(-1).expand(batch, channels, segments, size)
    return spread.reshape(batch, channels, segments * size)[..., :frames]


def segment_means(x: torch.Tensor, size: int = SEGMENT_FRAMES) -> torch.Tensor:
    """``(B, C, T)`` -> ``(B, C, T)``: each step replaced by the mean of its ``size``-step segment.

    The last segment may be shorter; its mean is over the steps it has.
    """
    means = F.avg_pool1d(x, size, size, ceil_mode=True)  # (B, C, S = ceil(T / size))
    return spread_segments(means, x.shape[-1], size)


class CAMLayer(nn.Module):
    """Bottlenecked dilated TDNN layer whose output is gated by a context-aware mask."""

    def __init__(self, cin: int, dilation: int) -> None:
        super().__init__()
        self.bn_in = nn.BatchNorm1d(cin)
        self.squeeze = nn.Conv1d(cin, BOTTLENECK, 1, bias=False)
        self.bn_mid = nn.BatchNorm1d(BOTTLENECK)
        pad = (KERNEL - 1) // 2 * dilation
        self.local = nn.Conv1d(
            BOTTLENECK, GROWTH, KERNEL, padding=pad, dilation=dilation, bias=False
        )
        self.mask_hidden = nn.Conv1d(BOTTLENECK, BOTTLENECK // MASK_REDUCTION, 1)
        self.mask_out = nn.Conv1d(BOTTLENECK // MASK_REDUCTION, GROWTH, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn_mid(self.squeeze(F.relu(self.bn_in(x)))))
        # The mask's layers act on each step alone, so they run once per segment (2 for a
        # 3-s fragment, not 149 steps) and the mask is spread over the segment's steps after:
        # the same numbers as spreading the segment means first, for less work.
        segments = F.avg_pool1d(h, SEGMENT_FRAMES, SEGMENT_FRAMES, ceil_mode=True)
        context = h.mean(dim=-1, keepdim=True) + segments  # (B, C, S)
        mask = torch.sigmoid(self.mask_out(F.relu(self.mask_hidden(context))))
        return self.local(h) * spread_segments(mask, h.shape[-1])


class DenseBlock(nn.Module):
    """CAM layers whose outputs are appended to their input: C -> C + layers * GROWTH."""

    def __init__(self, cin: int, layers: int, dilation: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CAMLayer(cin + i * GROWTH, dilation) for i in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x


class Transition(nn.Module):
    """Batch norm, ReLU and a 1x1 convolution that halves the channels."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(cin)
        self.conv = nn.Conv1d(cin, cin // 2, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.relu(self.bn(x)))


def mean_std_pool(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, T)`` -> ``(B, 2C)``: mean and unbiased standard deviation over time."""
    mean = x.mean(dim=-1)
    if x.shape[-1] < 2:
        return torch.cat([mean, torch.full_like(mean, STATS_EPS)], dim=-1)
    return torch.cat([mean, x.std(dim=-1, unbiased=True)], dim=-1)


class CAMPPBody(nn.Module):
    """``(B, n_mels, frames)`` mean-normalised log fbank -> ``(B, embedding_dim)``.

    Works on any number of frames (fragments, whole recordings); ``ModelConfig`` fields other
    than ``n_mels`` and ``embedding_dim`` do not apply (the widths above are the model's).
    """

    def __init__(self, n_features: int, cfg: ModelConfig) -> None:
        super().__init__()
        embedding_dim = cfg.embedding_dim
        self.front = FrontConv(n_features)
        self.tdnn = nn.Conv1d(
            self.front.out_channels, TDNN_CHANNELS, 5, stride=2, padding=2, bias=False
        )
        self.tdnn_bn = nn.BatchNorm1d(TDNN_CHANNELS)
        blocks: list[nn.Module] = []
        channels = TDNN_CHANNELS
        for layers, dilation in BLOCKS:
            blocks.append(DenseBlock(channels, layers, dilation))
            channels += layers * GROWTH
            blocks.append(Transition(channels))
            channels //= 2
        self.blocks = nn.Sequential(*blocks)
        self.out_bn = nn.BatchNorm1d(channels)
        self.embed = nn.Linear(2 * channels, embedding_dim, bias=False)
        self.embed_bn = nn.BatchNorm1d(embedding_dim, affine=False)

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before pooling: ``(B, n_mels, frames)`` -> ``(B, 512, steps)``."""
        x = F.relu(self.tdnn_bn(self.tdnn(self.front(x))))
        return F.relu(self.out_bn(self.blocks(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_bn(self.embed(mean_std_pool(self.frame_features(x))))
