#!/usr/bin/env python3
"""Load `cohort export --format safetensors` files into PyTorch: the module is built from the
config in the file's metadata, and `load_state_dict(strict=True)` takes the file's tensors.

    import cohort_torch
    model, metadata = cohort_torch.load("model.safetensors")   # an nn.Module in eval mode
    logits = model(x)   # images: NCHW floats normalized as metadata says (see `prepare`)

Every layer is an attribute named as in Cohort (`conv2d_1`, `residual_2`, `transformer_block_1`),
so the state_dict keys are the file's names (`residual_2.conv2d_4.weight`). Needs torch, numpy
and pyyaml; the safetensors package is not needed (the format is read here, 20 lines).
"""
import json
import math
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

DTYPES = {"F32": np.float32, "I64": np.int64}
ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU}


def read_safetensors(path):
    """(tensors as torch tensors by name, metadata dict) of a safetensors file."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        data = f.read()
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        array = np.frombuffer(data[begin:end], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
        tensors[name] = torch.from_numpy(array.copy())
    return tensors, metadata


class Conv2d(nn.Conv2d):
    """nn.Conv2d with TensorFlow's `same` padding (an odd total: the extra row/column last)."""

    def __init__(self, channels, filters, kernel, stride, padding, bias, input_hw):
        super().__init__(channels, filters, kernel, stride=stride, bias=bias)
        self.pad = (0, 0, 0, 0)
        if padding == "same":
            h, w = input_hw
            th = max((math.ceil(h / stride) - 1) * stride + kernel - h, 0)
            tw = max((math.ceil(w / stride) - 1) * stride + kernel - w, 0)
            self.pad = (tw // 2, tw - tw // 2, th // 2, th - th // 2)

    def forward(self, x):
        return super().forward(F.pad(x, self.pad))


class Sequence(nn.Module):
    """Layers run in order; each is an attribute under its Cohort name."""

    def __init__(self):
        super().__init__()
        self.order = []

    def append(self, name, module):
        self.add_module(name, module)
        self.order.append(name)

    def forward(self, x):
        for name in self.order:
            x = getattr(self, name)(x)
        return x


class Residual(Sequence):
    def __init__(self):
        super().__init__()
        self.shortcut, self.activation = None, None

    def forward(self, x):
        y = super().forward(x) + (self.projection_bn(self.projection(x)) if self.shortcut else x)
        return self.activation(y) if self.activation is not None else y


class Attention(nn.Module):
    def __init__(self, width, heads, bias):
        super().__init__()
        self.qkv = nn.Linear(width, 3 * width, bias=bias)
        self.proj = nn.Linear(width, width, bias=bias)
        self.heads = heads

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, c))


class TransformerBlock(nn.Module):
    def __init__(self, width, heads, ratio, bias):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attention = Attention(width, heads, bias)
        self.ln_2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, ratio * width, bias=bias)
        self.proj = nn.Linear(ratio * width, width, bias=bias)

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.proj(F.gelu(self.fc(self.ln_2(x))))


class Positional(nn.Embedding):
    def forward(self, x):
        return x + self.weight[: x.shape[1]]


class LSTM(nn.LSTM):
    def __init__(self, width, hidden, layers, return_sequences):
        super().__init__(width, hidden, layers, batch_first=True)
        self.return_sequences = return_sequences

    def forward(self, x):
        y, _ = super().forward(x)
        return y if self.return_sequences else y[:, -1]


class TiedHead(nn.Module):
    def __init__(self, embedding):
        super().__init__()
        self.embedding = [embedding]  # not a submodule: no state_dict key of its own

    def forward(self, x):
        return x @ self.embedding[0].weight.t()


class Builder:
    def __init__(self):
        self.counts = {}
        self.embedding = None

    def name(self, spec):
        if spec.get("name"):
            return spec["name"]
        kind = spec["type"]
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return f"{kind}_{self.counts[kind]}"

    def stack(self, specs, shape, into):
        for spec in specs:
            kind, name = spec["type"], self.name(spec)
            activation = spec.get("activation")
            if kind == "flatten":
                into.append(name, nn.Flatten())
                shape = [int(np.prod(shape))]
            elif kind == "dense":
                if len(shape) == 3:  # an image read as its flattened row
                    into.append(name + "_flatten", nn.Flatten())
                    shape = [int(np.prod(shape))]
                into.append(name, nn.Linear(shape[-1], spec["units"], bias=spec.get("bias", True)))
                shape = shape[:-1] + [spec["units"]]
            elif kind == "conv2d":
                c, h, w = shape
                k, s, padding = spec["kernel"], spec.get("stride", 1), spec.get("padding", "valid")
                into.append(name, Conv2d(c, spec["filters"], k, s, padding, spec.get("bias", True), (h, w)))
                shape = [spec["filters"], math.ceil(h / s), math.ceil(w / s)] if padding == "same" else \
                        [spec["filters"], (h - k) // s + 1, (w - k) // s + 1]
            elif kind in ("max_pool", "avg_pool"):
                size = spec["size"]
                stride = spec.get("stride", size)
                into.append(name, (nn.MaxPool2d if kind == "max_pool" else nn.AvgPool2d)(size, stride))
                shape = [shape[0], (shape[1] - size) // stride + 1, (shape[2] - size) // stride + 1]
            elif kind == "global_avg_pool":
                into.append(name, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
                shape = [shape[0]]
            elif kind == "batch_norm":
                into.append(name, (nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d)(shape[0], eps=spec.get("epsilon", 1e-5)))
            elif kind == "dropout":
                into.append(name, nn.Identity())
            elif kind in ACTIVATIONS:
                into.append(name, ACTIVATIONS[kind]())
            elif kind == "leaky_relu":
                into.append(name, nn.LeakyReLU(spec.get("slope", 0.01)))
            elif kind == "residual":
                block = Residual()
                out = self.stack(spec["layers"], shape, block)
                if spec.get("projection", out != shape):
                    stride = max(1, math.ceil(shape[1] / out[1]))
                    block.shortcut = True
                    block.projection = Conv2d(shape[0], out[0], 1, stride, "same", False, shape[1:])
                    block.projection_bn = nn.BatchNorm2d(out[0])
                act = spec.get("activation")
                block.activation = ACTIVATIONS[act]() if act else None
                into.append(name, block)
                shape, activation = out, None
            elif kind == "embedding":
                self.embedding = nn.Embedding(spec["vocabulary"], spec["dim"])
                into.append(name, self.embedding)
                shape = shape + [spec["dim"]]
            elif kind == "positional_embedding":
                into.append(name, Positional(spec["max_length"], shape[-1]))
            elif kind == "layer_norm":
                into.append(name, nn.LayerNorm(shape[-1], eps=spec.get("epsilon", 1e-5)))
            elif kind == "attention":
                into.append(name, Attention(shape[-1], spec["heads"], spec.get("bias", True)))
            elif kind == "transformer_block":
                into.append(name, TransformerBlock(shape[-1], spec["heads"], spec.get("mlp_ratio", 4), spec.get("bias", True)))
            elif kind == "lm_head":
                if spec.get("tie_embeddings", True):
                    into.append(name, TiedHead(self.embedding))
                    shape = shape[:-1] + [self.embedding.num_embeddings]
                else:
                    into.append(name, nn.Linear(shape[-1], spec["units"], bias=False))
                    shape = shape[:-1] + [spec["units"]]
            elif kind == "lstm":
                sequences = spec.get("return_sequences", True)
                into.append(name, LSTM(shape[-1], spec["hidden"], spec.get("layers", 1), sequences))
                shape = (shape[:-1] if sequences else []) + [spec["hidden"]]
            else:
                raise ValueError(f"{kind}: unknown layer type")
            if kind in ("dense", "conv2d") and activation:
                into.append(f"{name}_{activation}", ACTIVATIONS[activation]() if activation in ACTIVATIONS else nn.LeakyReLU(0.01))
        return shape


def build(metadata):
    """The nn.Module the file's config describes (parameters not loaded)."""
    config = yaml.safe_load(metadata["config"])
    model = Sequence()
    Builder().stack(config["model"]["layers"], json.loads(metadata["input_shape"]), model)
    return model


def load(path):
    tensors, metadata = read_safetensors(path)
    model = build(metadata)
    model.load_state_dict(tensors, strict=True)
    return model.eval(), metadata


def prepare(features, metadata):
    """Rows as stored in a Cohort data file to the model's input: scaled (uint8 pixels / 255)
    and standardized as the model was trained; images NHWC become NCHW."""
    config = yaml.safe_load(metadata["config"])
    raw = np.asarray(features)
    x = raw.astype(np.float32)
    layout = metadata.get("input_layout", "CHW" if x.ndim >= 3 else "D")
    if layout == "CHW" and x.ndim == 3:
        x = x[..., None]
    normalize = config["data"].get("normalize", "scale")
    default_scale = 1 / 255 if normalize != "none" and raw.dtype == np.uint8 else 1
    x = x * np.float32(float(metadata.get("input_scale", default_scale)))
    if normalize == "standardize":
        x = (x - np.array(json.loads(metadata["normalization_mean"]), np.float32)) / np.array(json.loads(metadata["normalization_std"]), np.float32)
    if layout == "CHW":
        x = x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x))
