"""An EfficientAD-S-sized network for speed anchors: the published layer sizes, random weights.

Source: K. Batzner, L. Heckler, R. Koenig, "EfficientAD: Accurate Visual Anomaly Detection
at Millisecond-Level Latencies", WACV 2024 (arXiv:2303.14535), appendix tables of the
PDN-S patch description network and of the autoencoder, and the paper's inference
procedure (the map arithmetic below), with the padded convolutions of the tables (64x64
feature maps from a 256x256 image). Layer sizes as this file's author knows them from the
paper; the parameter count (8.06 M) matches the 8 M the paper gives for EfficientAD-S:

    PDN-S (teacher: 384 outputs; student: 768 = 384 for the teacher + 384 for the autoencoder)
      conv 4x4 128 pad 3, ReLU; avgpool 2x2 s2 pad 1; conv 4x4 256 pad 3, ReLU;
      avgpool 2x2 s2 pad 1; conv 3x3 256 pad 1, ReLU; conv 4x4 384 (768) pad 0
    autoencoder
      encoder: conv 4x4 s2 pad 1 of 32, 32, 64, 64, 64 channels (ReLU), conv 8x8 64
      decoder: bilinear to 3, 8, 15, 32, 63, 127, each then conv 4x4 64 pad 2 (ReLU);
               bilinear to 64, conv 3x3 64 pad 1 (ReLU), conv 3x3 384 pad 1
    inference: teacher output normalised by its channel mean / std; map_st = mean over
      channels of (teacher - student[:384])^2, map_ae = mean of (ae - student[384:])^2;
      both rescaled by their quantiles q_a, q_b (0.1 (m - q_a) / (q_b - q_a)),
      map = (map_st + map_ae) / 2, resized bilinearly to the image; score = max of the map.

93.3 GFLOPs per image at 256x256 (harness.cost), against the compact preset's 4.9 M
parameters and 10.6 GFLOPs. The weights, normalisation statistics and quantiles are
random: the network times like EfficientAD-S and detects nothing. Dropout is left out
(identity at inference).

It is exported as a dad_edge-compatible ONNX graph (input `image` (B, 3, 256, 256) pixel
values 0..255, outputs `anomaly_map` (B, 1, 256, 256) and `score` (B,), ImageNet
normalisation inside) with metadata that gives the input size, so the Detector runs it
exactly as it runs a dad_edge model on ONNX Runtime and TensorRT. For torch,
`AnchorDetector` is that Detector with the module in place of the torch backend.
"""
from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import dad_edge
from dad_edge.artifacts import metadata as md
from dad_edge.artifacts.atomic import write_bytes_atomic
from dad_edge.runtime.backends.base import INPUT_NAME, OUTPUT_NAMES, Backend
from dad_edge.model.config import preset

NAME = "efficientad-s"
IMAGE_SIZE = 256
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pdn_small(out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 128, 4, padding=3), nn.ReLU(inplace=True),
        nn.AvgPool2d(2, 2, padding=1),
        nn.Conv2d(128, 256, 4, padding=3), nn.ReLU(inplace=True),
        nn.AvgPool2d(2, 2, padding=1),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, out_channels, 4),
    )


class AutoEncoder(nn.Module):
    DECODER_SIZES = (3, 8, 15, 32, 63, 127)

    def __init__(self, out_channels: int = 384):
        super().__init__()
        widths = (32, 32, 64, 64, 64)
        layers, c = [], 3
        for w in widths:
            layers += [nn.Conv2d(c, w, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
            c = w
        layers.append(nn.Conv2d(c, 64, 8))
        self.encoder = nn.Sequential(*layers)
        self.decoder = nn.ModuleList(nn.Conv2d(64, 64, 4, padding=2) for _ in self.DECODER_SIZES)
        self.tail = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(64, out_channels, 3, padding=1))
        self.out_size = IMAGE_SIZE // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        for size, conv in zip(self.DECODER_SIZES, self.decoder):
            z = F.relu(conv(F.interpolate(z, size=size, mode="bilinear")))
        return self.tail(F.interpolate(z, size=self.out_size, mode="bilinear"))


class EfficientADS(nn.Module):
    """Pixel values (B, 3, 256, 256) 0..255 -> (anomaly_map (B, 1, 256, 256), score (B,))."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.teacher = pdn_small(384)
        self.student = pdn_small(768)
        self.autoencoder = AutoEncoder(384)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)
        self.register_buffer("teacher_mean", torch.randn(1, 384, 1, 1, generator=g))
        self.register_buffer("teacher_std", torch.rand(1, 384, 1, 1, generator=g) + 0.5)
        self.register_buffer("quantiles", torch.tensor([0.1, 1.0, 0.2, 2.0]))  # q_st_a, q_st_b, q_ae_a, q_ae_b

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = (image - self.mean) / self.std
        t = (self.teacher(x) - self.teacher_mean) / self.teacher_std
        s = self.student(x)
        ae = self.autoencoder(x)
        map_st = ((t - s[:, :384]) ** 2).mean(dim=1, keepdim=True)
        map_ae = ((ae - s[:, 384:]) ** 2).mean(dim=1, keepdim=True)
        q = self.quantiles
        map_st = 0.1 * (map_st - q[0]) / (q[1] - q[0])
        map_ae = 0.1 * (map_ae - q[2]) / (q[3] - q[2])
        amap = F.interpolate(0.5 * map_st + 0.5 * map_ae, size=image.shape[-2:], mode="bilinear")
        return amap, amap.flatten(1).amax(dim=1)


def anchor_metadata() -> dict:
    """dad_edge metadata that gives the Detector the input size (256x256 RGB) and nothing else."""
    meta = md.build_metadata(preset("compact", image_size=IMAGE_SIZE),
                             anchor={"name": NAME, "weights": "random",
                                     "note": "speed anchor; the model section only sets the input size"})
    from dad_edge.export.onnx_export import export_section

    return md.derive_metadata(meta, "onnx", export=export_section(17, True, 1))


def export_anchor_onnx(out: Path, module: Optional[EfficientADS] = None) -> Path:
    """Write the anchor as an ONNX graph with dynamic batch and dad_edge metadata."""
    import onnx

    module = (module or EfficientADS()).float().cpu().eval()
    example = torch.full((1, 3, IMAGE_SIZE, IMAGE_SIZE), 127.0)
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(module, (example,), buf, dynamo=False, opset_version=17, input_names=[INPUT_NAME],
                          output_names=list(OUTPUT_NAMES), dynamic_axes=axes, do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    proto.producer_name = "dad_edge benchmarks"
    onnx.helper.set_model_props(proto, {md.META_KEY: md.dumps(anchor_metadata())})
    write_bytes_atomic(out, proto.SerializeToString())
    return Path(out)


class ModuleBackend(Backend):
    """A torch module behind the Backend seam, with the torch backend's transfers and dtypes."""

    name = "torch"

    def __init__(self, module: nn.Module, meta: dict, device: str = "cpu", half: bool = False):
        self.device = device
        self.meta = meta
        self.dtype = torch.float16 if half else torch.float32
        # A copy: .to() moves a module in place, and the caller's stays on the CPU in fp32.
        self.module = copy.deepcopy(module).to(device=device, dtype=self.dtype).eval()

    def infer(self, x: np.ndarray):
        with torch.inference_mode():
            image = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device, self.dtype)
            maps, scores = self.module(image)
            return maps[:, 0].float().cpu().numpy(), scores.float().cpu().numpy()


class AnchorDetector(dad_edge.Detector):
    """The Detector (pre-processing, batching, results) with the anchor module as its torch backend.

    Opened on the anchor's ONNX file, so that every attribute the Detector sets is set,
    then the ONNX Runtime session is swapped for the module.
    """

    def __init__(self, onnx_path: Path, module: nn.Module, device: str = "cpu", half: bool = False,
                 batch_size: int = 8):
        super().__init__(onnx_path, backend="onnxruntime", device="cpu", batch_size=batch_size)
        self.backend.close()
        self.backend = ModuleBackend(module, self.meta, device=device, half=half)
        self.batch_size = batch_size
