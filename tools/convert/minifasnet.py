"""MiniFASNet V2 / V1SE (Minivision Silent-Face-Anti-Spoofing) from PyTorch state dicts to ONNX.

No PyTorch: the .pth file is read by a restricted unpickler that accepts only the few
globals a state dict of plain tensors needs and rebuilds every tensor as a NumPy array;
BatchNorm is folded into the preceding convolution or linear layer; the graph is written
with `onnx.helper`. The same .pth always gives the same ONNX bytes (fixed names, order,
metadata and float arithmetic), so the manifest can pin the ONNX sha256.

The architecture is read off the state dict, as upstream defines it
(src/model_lib/MiniFASNet.py at the pinned commit):
- `conv1` 3x3 stride 2, `conv2_dw` 3x3 depthwise: Conv + BN + PReLU ("Conv_block");
- `conv_23`, `conv_34`, `conv_45`: downsampling blocks (1x1 expand, 3x3 depthwise
  stride 2, 1x1 linear project), no shortcut;
- `conv_3`, `conv_4`, `conv_5` `.model.<i>`: the same block at stride 1 with an identity
  shortcut; in V1SE the last block of each group scales the projection by a
  squeeze-and-excitation gate before the shortcut is added;
- `conv_6_sep` 1x1 Conv_block, `conv_6_dw` depthwise 5x5 (for 80x80 inputs) without
  activation, flatten, `linear` 512->128, BatchNorm1d, `prob` 128->3 (dropout is off
  in inference).
Output: the three logits (softmax index 1 = a real face).

Both state-dict formats are read: the legacy stream (magic number, protocol, system
info, the pickled dict, the storage keys, then each storage as a count and raw bytes;
the two upstream files use it) and the zip format of torch >= 1.6.

`python -m tools.convert.minifasnet IN.pth OUT.onnx`.
"""

from __future__ import annotations

import argparse
import collections
import io
import pickle
import struct
import sys
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]
StateDict = dict[str, NDArray[Any]]

#: The legacy torch.save stream starts with this pickled integer.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES: Mapping[str, Any] = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ByteStorage": np.uint8,
}
BN_EPS = 1e-5
OPSET = 13
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
INPUT_SIZE = 80
PRODUCER = "faceval.tools.convert.minifasnet"
PRODUCER_VERSION = "1"


class ConversionError(ValueError):
    """The file is not a MiniFASNet state dict this converter understands."""


# --- reading a .pth without torch -----------------------------------------------------------


@dataclass(frozen=True)
class _TensorRef:
    storage: str
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(
    storage: str, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    """Only an OrderedDict of tensors: any other global (code) is refused."""

    def __init__(self, file: IO[bytes], storages: dict[str, str]) -> None:
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a state dict")

    def persistent_load(self, pid: Any) -> str:
        # ("storage", type, key, location, numel[, view_metadata])
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        kind, key = pid[1], str(pid[2])
        if kind not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"unsupported storage type {kind!r}")
        self.storages[key] = kind
        return key


def _tensors(obj: Any, storages: Mapping[str, NDArray[Any]]) -> StateDict:
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ConversionError("the file does not hold a state dict")
    out: StateDict = {}
    for name, ref in obj.items():
        if not isinstance(ref, _TensorRef):
            raise ConversionError(f"{name} is not a tensor")
        flat = storages[ref.storage]
        count = int(np.prod(ref.size)) if ref.size else 1
        if ref.size and ref.stride != tuple(_contiguous_strides(ref.size)):
            raise ConversionError(f"{name} is not contiguous")
        out[name] = flat[ref.offset : ref.offset + count].reshape(ref.size).copy()
    return out


def _contiguous_strides(size: tuple[int, ...]) -> list[int]:
    strides, step = [], 1
    for dim in reversed(size):
        strides.append(step)
        step *= dim
    return strides[::-1]


class _PlainUnpickler(pickle.Unpickler):
    """Ints, strings, lists and dicts only: the legacy header and storage-key records."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a header record")


def _plain_load(stream: IO[bytes]) -> Any:
    return _PlainUnpickler(stream).load()


def _read_legacy(data: bytes) -> StateDict:
    stream = io.BytesIO(data)
    if _plain_load(stream) != _LEGACY_MAGIC:
        raise ConversionError("not a torch.save file (bad magic number)")
    _plain_load(stream)  # the protocol version
    info = _plain_load(stream)
    if not info.get("little_endian", True):
        raise ConversionError("big-endian state dicts are not supported")
    kinds: dict[str, str] = {}
    obj = _StateDictUnpickler(stream, kinds).load()
    keys = _plain_load(stream)
    storages: dict[str, NDArray[Any]] = {}
    for key in keys:
        dtype = np.dtype(_STORAGE_DTYPES[kinds[str(key)]])
        (count,) = struct.unpack("<q", stream.read(8))
        raw = stream.read(count * dtype.itemsize)
        if len(raw) != count * dtype.itemsize:
            raise ConversionError("truncated storage")
        storages[str(key)] = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
    return _tensors(obj, storages)


def _read_zip(data: bytes) -> StateDict:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise ConversionError("zip state dict without data.pkl")
        prefix = pkl[: -len("data.pkl")]
        kinds: dict[str, str] = {}
        obj = _StateDictUnpickler(io.BytesIO(archive.read(pkl)), kinds).load()
        storages = {
            key: np.frombuffer(
                archive.read(f"{prefix}data/{key}"),
                dtype=np.dtype(_STORAGE_DTYPES[kind]).newbyteorder("<"),
            )
            for key, kind in kinds.items()
        }
    return _tensors(obj, storages)


def read_state_dict(path: Path) -> StateDict:
    """The tensors of a .pth state dict as NumPy arrays, `module.` prefix removed."""
    data = path.read_bytes()
    raw = _read_zip(data) if data[:4] == b"PK\x03\x04" else _read_legacy(data)
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in raw.items()}


# --- the architecture, read off the state dict ----------------------------------------------


@dataclass(frozen=True)
class Conv:
    """A convolution with BatchNorm folded in, optionally followed by PReLU."""

    weight: FloatArray
    bias: FloatArray
    stride: int
    groups: int
    prelu: FloatArray | None
    padding: int


@dataclass(frozen=True)
class SqueezeExcite:
    fc1: Conv
    fc2: Conv


@dataclass(frozen=True)
class Block:
    expand: Conv
    depthwise: Conv
    project: Conv
    residual: bool
    se: SqueezeExcite | None


@dataclass(frozen=True)
class Head:
    weight: FloatArray  # linear with BatchNorm1d folded in: (128, 512)
    bias: FloatArray
    prob: FloatArray  # (3, 128)


@dataclass(frozen=True)
class Network:
    """The layers in order: stem convs, blocks, conv_6_sep, conv_6_dw, head."""

    variant: str
    stem: tuple[Conv, Conv]
    blocks: tuple[Block, ...]
    sep: Conv
    dw: Conv
    head: Head

    @property
    def num_classes(self) -> int:
        return int(self.head.prob.shape[0])


def _bn(sd: StateDict, prefix: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """BatchNorm (eval) as scale and shift, in float64 so folding adds no rounding."""
    try:
        gamma = sd[f"{prefix}.weight"].astype(np.float64)
        beta = sd[f"{prefix}.bias"].astype(np.float64)
        mean = sd[f"{prefix}.running_mean"].astype(np.float64)
        var = sd[f"{prefix}.running_var"].astype(np.float64)
    except KeyError as exc:
        raise ConversionError(f"missing BatchNorm tensor {exc}") from None
    scale = gamma / np.sqrt(var + BN_EPS)
    return scale, beta - mean * scale


def _conv(
    sd: StateDict, conv: str, bn: str, stride: int, prelu: str | None, *, same: bool = True
) -> Conv:
    """`same`: pad by half the kernel (every conv but the final 5x5 depthwise one)."""
    try:
        weight = sd[f"{conv}.weight"].astype(np.float64)
    except KeyError:
        raise ConversionError(f"missing tensor {conv}.weight") from None
    if weight.ndim != 4:
        raise ConversionError(f"{conv}.weight is not a convolution kernel: {weight.shape}")
    scale, shift = _bn(sd, bn)
    folded = weight * scale[:, None, None, None]
    out_c = weight.shape[0]
    in_per_group = weight.shape[1]
    groups = out_c if in_per_group == 1 and out_c > 1 else 1
    slope = sd[f"{prelu}.weight"].astype(np.float32) if prelu else None
    return Conv(
        weight=folded.astype(np.float32),
        bias=shift.astype(np.float32),
        stride=stride,
        groups=groups,
        prelu=slope,
        padding=weight.shape[2] // 2 if same else 0,
    )


def _block_(sd: StateDict, prefix: str, stride: int, residual: bool) -> Block:
    se = None
    if f"{prefix}.se_module.fc1.weight" in sd:
        se = SqueezeExcite(
            fc1=_conv(sd, f"{prefix}.se_module.fc1", f"{prefix}.se_module.bn1", 1, None),
            fc2=_conv(sd, f"{prefix}.se_module.fc2", f"{prefix}.se_module.bn2", 1, None),
        )
    return Block(
        expand=_conv(sd, f"{prefix}.conv.conv", f"{prefix}.conv.bn", 1, f"{prefix}.conv.prelu"),
        depthwise=_conv(
            sd, f"{prefix}.conv_dw.conv", f"{prefix}.conv_dw.bn", stride, f"{prefix}.conv_dw.prelu"
        ),
        project=_conv(sd, f"{prefix}.project.conv", f"{prefix}.project.bn", 1, None),
        residual=residual,
        se=se,
    )


def _group_size(sd: StateDict, prefix: str) -> int:
    count = 0
    while f"{prefix}.model.{count}.conv.conv.weight" in sd:
        count += 1
    if count == 0:
        raise ConversionError(f"no residual blocks under {prefix}")
    return count


def build_network(sd: StateDict) -> Network:
    """The network the state dict describes (MiniFASNetV1/V2, with or without SE)."""
    blocks: list[Block] = []
    for down, group in (("conv_23", "conv_3"), ("conv_34", "conv_4"), ("conv_45", "conv_5")):
        blocks.append(_block_(sd, down, stride=2, residual=False))
        for i in range(_group_size(sd, group)):
            blocks.append(_block_(sd, f"{group}.model.{i}", stride=1, residual=True))
    try:
        linear = sd["linear.weight"].astype(np.float64)
        prob = sd["prob.weight"].astype(np.float32)
    except KeyError as exc:
        raise ConversionError(f"missing head tensor {exc}") from None
    scale, shift = _bn(sd, "bn")
    has_se = any(b.se is not None for b in blocks)
    expand_width = blocks[2].expand.weight.shape[0]  # conv_3.model.1: 26 in V1, 13 in V2
    variant = f"MiniFASNet{'V1' if expand_width == 26 else 'V2'}{'SE' if has_se else ''}"
    return Network(
        variant=variant,
        stem=(
            _conv(sd, "conv1.conv", "conv1.bn", 2, "conv1.prelu"),
            _conv(sd, "conv2_dw.conv", "conv2_dw.bn", 1, "conv2_dw.prelu"),
        ),
        blocks=tuple(blocks),
        sep=_conv(sd, "conv_6_sep.conv", "conv_6_sep.bn", 1, "conv_6_sep.prelu"),
        dw=_conv(sd, "conv_6_dw.conv", "conv_6_dw.bn", 1, None, same=False),
        head=Head(
            weight=(linear * scale[:, None]).astype(np.float32),
            bias=shift.astype(np.float32),
            prob=prob,
        ),
    )


# --- the ONNX graph -------------------------------------------------------------------------


class _GraphBuilder:
    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper = helper
        self.numpy_helper = numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.counter = 0

    def _name(self, kind: str) -> str:
        self.counter += 1
        return f"{kind}_{self.counter}"

    def const(self, value: NDArray[Any], kind: str) -> str:
        name = self._name(kind)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        out = self._name(op.lower())
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x: str, layer: Conv) -> str:
        k = layer.weight.shape[2]
        p = layer.padding
        y = self.node(
            "Conv",
            [x, self.const(layer.weight, "w"), self.const(layer.bias, "b")],
            kernel_shape=[k, k],
            strides=[layer.stride, layer.stride],
            pads=[p, p, p, p],
            group=layer.groups,
        )
        if layer.prelu is not None:
            slope = layer.prelu.reshape(-1, 1, 1).astype(np.float32)
            y = self.node("PRelu", [y, self.const(slope, "slope")])
        return y

    def block(self, x: str, block: Block) -> str:
        y = self.conv(self.conv(self.conv(x, block.expand), block.depthwise), block.project)
        if block.se is not None:
            gate = self.node("GlobalAveragePool", [y])
            gate = self.node("Relu", [self.conv(gate, block.se.fc1)])
            gate = self.node("Sigmoid", [self.conv(gate, block.se.fc2)])
            y = self.node("Mul", [y, gate])
        if block.residual:
            y = self.node("Add", [x, y])
        return y


def to_onnx_bytes(network: Network) -> bytes:
    """The network as a serialised ONNX model (deterministic)."""
    from onnx import TensorProto, checker, helper

    g = _GraphBuilder()
    x = INPUT_NAME
    for layer in network.stem:
        x = g.conv(x, layer)
    for block in network.blocks:
        x = g.block(x, block)
    x = g.conv(g.conv(x, network.sep), network.dw)
    x = g.node("Flatten", [x], axis=1)
    x = g.node(
        "Gemm",
        [x, g.const(network.head.weight, "linear"), g.const(network.head.bias, "bn")],
        transB=1,
    )
    logits = g.node("Gemm", [x, g.const(network.head.prob, "prob")], transB=1)
    g.nodes.append(helper.make_node("Identity", [logits], [OUTPUT_NAME], name="output"))
    graph = helper.make_graph(
        g.nodes,
        network.variant,
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, ["batch", 3, INPUT_SIZE, INPUT_SIZE]
            )
        ],
        [
            helper.make_tensor_value_info(
                OUTPUT_NAME, TensorProto.FLOAT, ["batch", network.num_classes]
            )
        ],
        g.initializers,
    )
    model = helper.make_model(
        graph,
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
        opset_imports=[helper.make_opsetid("", OPSET)],
        doc_string=(
            f"{network.variant} (Minivision Silent-Face-Anti-Spoofing, Apache-2.0): BGR float "
            "0-255 NCHW 80x80 in, 3 logits out (softmax index 1 = real face)."
        ),
    )
    model.ir_version = 8
    checker.check_model(model)
    data: bytes = model.SerializeToString(deterministic=True)
    return data


def convert(pth: Path) -> bytes:
    """The ONNX bytes for a MiniFASNet .pth file."""
    return to_onnx_bytes(build_network(read_state_dict(pth)))


def convert_file(pth: Path, onnx_path: Path) -> None:
    """The registry's entry point: convert `pth` and write the ONNX file."""
    onnx_path.write_bytes(convert(pth))


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.convert.minifasnet")
    parser.add_argument("pth", type=Path)
    parser.add_argument("onnx", type=Path)
    args = parser.parse_args(argv)
    try:
        convert_file(args.pth, args.onnx)
    except (ConversionError, pickle.UnpicklingError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    import hashlib

    out(f"wrote {args.onnx} sha256 {hashlib.sha256(args.onnx.read_bytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
