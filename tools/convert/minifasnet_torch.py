# mypy: allow-subclassing-any, disable-error-code="import-not-found"
"""A PyTorch reference of MiniFASNet V2 / V1SE, used only to check the ONNX conversion.

Written from the state dicts' key names and tensor shapes (and upstream's description of
the blocks), independently of the NumPy converter: the channel widths come from the
`KEEP_*` lists below, not from the file, so a converter that misread the structure
would disagree with it. PyTorch is imported lazily and only here: it is in the
`convert` extra (`pip install torch==2.13.0`), never a runtime dependency.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Channel widths, in layer order, of the two upstream variants ("1.8M" and "1.8M_").
KEEP_V1 = (
    32, 32, 103, 103, 64, 13, 13, 64, 26, 26, 64, 13, 13, 64, 52, 52, 64, 231, 231, 128,
    154, 154, 128, 52, 52, 128, 26, 26, 128, 52, 52, 128, 26, 26, 128, 26, 26, 128, 308, 308,
    128, 26, 26, 128, 26, 26, 128, 512, 512,
)  # fmt: skip
KEEP_V2 = (
    32, 32, 103, 103, 64, 13, 13, 64, 13, 13, 64, 13, 13, 64, 13, 13, 64, 231, 231, 128,
    231, 231, 128, 52, 52, 128, 26, 26, 128, 77, 77, 128, 26, 26, 128, 26, 26, 128, 308, 308,
    128, 26, 26, 128, 26, 26, 128, 512, 512,
)  # fmt: skip


def build(variant: str) -> Any:
    """An untrained `torch.nn.Module` for "MiniFASNetV2" or "MiniFASNetV1SE" (80x80 input)."""
    import torch
    from torch import nn

    class ConvBlock(nn.Module):
        def __init__(
            self, cin: int, cout: int, k: int = 1, s: int = 1, p: int = 0, g: int = 1,
            act: bool = True,
        ) -> None:  # fmt: skip
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, s, p, groups=g, bias=False)
            self.bn = nn.BatchNorm2d(cout)
            if act:
                self.prelu = nn.PReLU(cout)
            self.act = act

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.bn(self.conv(x))
            return self.prelu(x) if self.act else x

    class SE(nn.Module):
        def __init__(self, channels: int, reduction: int = 4) -> None:
            super().__init__()
            self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels // reduction)
            self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            gate = x.mean(dim=(2, 3), keepdim=True)
            gate = torch.relu(self.bn1(self.fc1(gate)))
            return x * torch.sigmoid(self.bn2(self.fc2(gate)))

    class DepthWise(nn.Module):
        def __init__(self, cin: int, mid: int, cout: int, stride: int, residual: bool, se: bool):
            super().__init__()
            self.conv = ConvBlock(cin, mid)
            self.conv_dw = ConvBlock(mid, mid, 3, stride, 1, g=mid)
            self.project = ConvBlock(mid, cout, act=False)
            self.residual = residual
            if se:
                self.se_module = SE(cout)
            self.se = se

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.project(self.conv_dw(self.conv(x)))
            if self.se:
                y = self.se_module(y)
            return x + y if self.residual else y

    class Group(nn.Module):
        def __init__(self, keep: Sequence[int], start: int, count: int, se: bool) -> None:
            super().__init__()
            blocks = []
            for i in range(count):
                a, m, o = keep[start + 3 * i], keep[start + 3 * i + 1], keep[start + 3 * i + 3]
                blocks.append(DepthWise(a, m, o, 1, True, se and i == count - 1))
            self.model = nn.Sequential(*blocks)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.model(x)
            return out

    class MiniFASNet(nn.Module):
        def __init__(self, keep: Sequence[int], se: bool) -> None:
            super().__init__()
            self.conv1 = ConvBlock(3, keep[0], 3, 2, 1)
            self.conv2_dw = ConvBlock(keep[0], keep[1], 3, 1, 1, g=keep[1])
            self.conv_23 = DepthWise(keep[1], keep[2], keep[4], 2, False, False)
            self.conv_3 = Group(keep, 4, 4, se)
            self.conv_34 = DepthWise(keep[16], keep[17], keep[19], 2, False, False)
            self.conv_4 = Group(keep, 19, 6, se)
            self.conv_45 = DepthWise(keep[37], keep[38], keep[40], 2, False, False)
            self.conv_5 = Group(keep, 40, 2, se)
            self.conv_6_sep = ConvBlock(keep[46], keep[47])
            self.conv_6_dw = ConvBlock(keep[47], keep[48], 5, 1, 0, g=keep[48], act=False)
            self.linear = nn.Linear(512, 128, bias=False)
            self.bn = nn.BatchNorm1d(128)
            self.prob = nn.Linear(128, 3, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.conv2_dw(self.conv1(x))
            x = self.conv_4(self.conv_34(self.conv_3(self.conv_23(x))))
            x = self.conv_6_dw(self.conv_6_sep(self.conv_5(self.conv_45(x))))
            out: torch.Tensor = self.prob(self.bn(self.linear(x.flatten(1))))
            return out

    if variant == "MiniFASNetV2":
        return MiniFASNet(KEEP_V2, se=False)
    if variant == "MiniFASNetV1SE":
        return MiniFASNet(KEEP_V1, se=True)
    raise ValueError(f"unknown variant {variant!r}")


def load(pth: Path) -> Any:
    """The reference network with the file's weights, in eval mode (variant from the name)."""
    import torch

    variant = pth.stem.split("_")[-1]
    model = build(variant)
    # weights_only: the file is data; torch refuses any pickled code in it.
    state = torch.load(pth, map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model.eval()


def softmax(pth: Path, batch: Any) -> Any:
    """Softmax of the reference network's logits for a float32 NCHW NumPy batch."""
    import torch

    model = load(pth)
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(batch)), dim=1).numpy()
