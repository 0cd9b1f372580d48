#!/usr/bin/env python3
"""Rebuild any of Cohort's image models (W1-W4, the binary classifier) in PyTorch from a
checkpoint alone, following docs/formats.md, and check it against `cohort predict`.

    cohort predict CKPT --data data/fashion-mnist/test.h5 --out /tmp/predictions.h5
    python Examples/pytorch/image_model_from_checkpoint.py CKPT data/fashion-mnist/test.h5 /tmp/predictions.h5

Needs torch, h5py, numpy and pyyaml. From the file it reads the stored config (attribute
`config`: the layer list), the parameters and batch-norm buffers, and the normalization the model
was trained with (`/normalization/mean`, `std`). The rules it follows (docs/formats.md):
  - a layer without a `name` is `<type>_<n>`, n counting that type across the whole model,
    residual blocks included (their layers are `residual_N/<type>_<n>`); the projection shortcut
    is `residual_N/projection` (1x1 conv, stride ceil(in_H / out_H), no bias) + `projection_bn`;
  - dense weight [in, out] (transposed for nn.Linear); conv2d weight [out, in, kh, kw] as in torch;
  - `padding: same` splits an odd total TensorFlow's way (the extra row/column bottom and right);
  - a dense or conv2d `activation` other than relu follows as its own layer;
  - inputs: NHWC uint8 pixels / 255 (normalize: scale or standardize), then (x - mean) / std per
    channel with the checkpoint's statistics (standardize), as NCHW.
Prints the test accuracy and, given cohort's predictions, the largest probability difference and
the number of rows whose predicted class differs.
"""
import math
import sys

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU}


class SamePadConv(nn.Module):
    """nn.Conv2d with TensorFlow's `same` padding (or none for `valid`)."""

    def __init__(self, conv, padding, input_hw):
        super().__init__()
        self.conv = conv
        k, s = conv.kernel_size[0], conv.stride[0]
        self.pad = (0, 0, 0, 0)
        if padding == "same":
            (h, w) = input_hw
            th = max((math.ceil(h / s) - 1) * s + k - h, 0)
            tw = max((math.ceil(w / s) - 1) * s + k - w, 0)
            self.pad = (tw // 2, tw - tw // 2, th // 2, th - th // 2)

    def forward(self, x):
        return self.conv(F.pad(x, self.pad))


class Residual(nn.Module):
    def __init__(self, main, shortcut, activation):
        super().__init__()
        self.main, self.shortcut, self.activation = main, shortcut, activation

    def forward(self, x):
        y = self.main(x) + (self.shortcut(x) if self.shortcut is not None else x)
        return self.activation(y) if self.activation is not None else y


class Builder:
    def __init__(self, checkpoint):
        self.file = checkpoint
        self.counts = {}

    def name(self, spec, prefix):
        if spec.get("name"):
            return prefix + spec["name"]
        kind = spec["type"]
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return f"{prefix}{kind}_{self.counts[kind]}"

    def tensor(self, path):
        return torch.from_numpy(self.file[path][:].astype(np.float32))

    def conv(self, name, filters, kernel, stride, padding, bias, shape):
        channels, h, w = shape
        conv = nn.Conv2d(channels, filters, kernel, stride=stride, bias=bias)
        conv.weight.data = self.tensor(f"parameters/{name}/weight")
        if bias:
            conv.bias.data = self.tensor(f"parameters/{name}/bias")
        if padding == "same":
            oh, ow = math.ceil(h / stride), math.ceil(w / stride)
        else:
            oh, ow = (h - kernel) // stride + 1, (w - kernel) // stride + 1
        return SamePadConv(conv, padding, (h, w)), [filters, oh, ow]

    def batch_norm(self, name, epsilon, shape):
        norm = (nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d)(shape[0], eps=epsilon)
        norm.weight.data = self.tensor(f"parameters/{name}/gamma")
        norm.bias.data = self.tensor(f"parameters/{name}/beta")
        norm.running_mean = self.tensor(f"buffers/{name}/running_mean")
        norm.running_var = self.tensor(f"buffers/{name}/running_var")
        return norm

    def stack(self, specs, shape, prefix=""):
        modules = []
        for spec in specs:
            kind, name = spec["type"], self.name(spec, prefix)
            activation = spec.get("activation")
            if kind == "flatten":
                modules.append(nn.Flatten())
                shape = [int(np.prod(shape))]
            elif kind == "dense":
                if len(shape) > 1:  # an image read as its flattened row
                    modules.append(nn.Flatten())
                    shape = [int(np.prod(shape))]
                bias = spec.get("bias", True)
                linear = nn.Linear(shape[0], spec["units"], bias=bias)
                linear.weight.data = self.tensor(f"parameters/{name}/weight").T.contiguous()
                if bias:
                    linear.bias.data = self.tensor(f"parameters/{name}/bias")
                modules.append(linear)
                shape = [spec["units"]]
            elif kind == "conv2d":
                module, shape = self.conv(name, spec["filters"], spec["kernel"], spec.get("stride", 1),
                                          spec.get("padding", "valid"), spec.get("bias", True), shape)
                modules.append(module)
            elif kind in ("max_pool", "avg_pool"):
                size = spec["size"]
                stride = spec.get("stride", size)
                modules.append((nn.MaxPool2d if kind == "max_pool" else nn.AvgPool2d)(size, stride))
                shape = [shape[0], (shape[1] - size) // stride + 1, (shape[2] - size) // stride + 1]
            elif kind == "global_avg_pool":
                modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
                shape = [shape[0]]
            elif kind == "batch_norm":
                modules.append(self.batch_norm(name, spec.get("epsilon", 1e-5), shape))
            elif kind == "dropout":
                pass  # identity at inference
            elif kind in ACTIVATIONS:
                modules.append(ACTIVATIONS[kind]())
            elif kind == "leaky_relu":
                modules.append(nn.LeakyReLU(spec.get("slope", 0.01)))
            elif kind == "residual":
                main, out = self.stack(spec["layers"], shape, prefix=f"{name}/")
                shortcut = None
                if spec.get("projection", out != shape):
                    stride = max(1, math.ceil(shape[1] / out[1]))
                    conv, _ = self.conv(f"{name}/projection", out[0], 1, stride, "same", False, shape)
                    shortcut = nn.Sequential(conv, self.batch_norm(f"{name}/projection_bn", 1e-5, out))
                act = spec.get("activation")
                modules.append(Residual(main, shortcut, ACTIVATIONS[act]() if act else None))
                shape = out
                activation = None
            else:
                raise SystemExit(f"{kind}: not an image layer; see gpt_from_checkpoint.py for sequence models")
            if kind in ("dense", "conv2d") and activation:
                modules.append(ACTIVATIONS[activation]() if activation in ACTIVATIONS else nn.LeakyReLU(0.01))
        return nn.Sequential(*modules), shape


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    checkpoint_path, data_path = sys.argv[1], sys.argv[2]
    with h5py.File(checkpoint_path, "r") as checkpoint, h5py.File(data_path, "r") as data:
        config = yaml.safe_load(checkpoint.attrs["config"])
        images = data[config["data"].get("features", "images")][:]
        labels = data[config["data"].get("labels", "labels")][:]
        x = images.astype(np.float32)
        if x.ndim == 3:
            x = x[..., None]
        normalize = config["data"].get("normalize", "scale")
        if normalize != "none" and images.dtype == np.uint8:
            x = x / np.float32(255)
        if normalize == "standardize":
            mean = checkpoint["normalization/mean"][:].astype(np.float32)
            std = checkpoint["normalization/std"][:].astype(np.float32)
            x = (x - mean) / std
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        model, _ = Builder(checkpoint).stack(config["model"]["layers"], list(x.shape[1:]))
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + 1000]) for i in range(0, len(x), 1000)])
    loss = config.get("loss", "softmax_cross_entropy")
    if (loss if isinstance(loss, str) else loss.get("type")) == "binary_cross_entropy":
        p1 = torch.sigmoid(logits[:, 0])
        probabilities = torch.stack([1 - p1, p1], dim=1).numpy()
    else:
        probabilities = torch.softmax(logits, dim=1).numpy()
    predicted = probabilities.argmax(axis=1)
    print(f"PyTorch rebuild of {checkpoint_path}: test accuracy {np.mean(predicted == labels):.4f} on {len(labels)} rows")
    if len(sys.argv) > 3:
        with h5py.File(sys.argv[3], "r") as cohort:
            theirs = cohort["probabilities"][:] if "probabilities" in cohort else cohort["predictions"][:]
        difference = np.abs(theirs - probabilities).max()
        changed = int(np.sum(theirs.argmax(axis=1) != predicted))
        print(f"against cohort predict: max |probability difference| {difference:.2e}, predictions that differ {changed}")
        if difference > 1e-4 or changed:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
