"""Data transforms of the ZoDi pipelines, registered in MMSeg's ``TRANSFORMS``.

``results['img']`` is (H, W, 3) uint8 **BGR**, as mmcv's loader gives, so a stock
``SegDataPreProcessor(bgr_to_rgb=True)`` works; labels (H, W) uint8 train ids, 255 ignored.
The paired pipeline of the paper (§4.1)::

    LoadZoDiPair                   source, generated, label; generated resized to the source size
    ZoDiPairedTransforms([Resize 512x1024, RandomCrop 384x768, RandomFlip 0.5])
                                   one draw of the random parameters, applied to both images
    ZoDiColorJitter(0.5, 0.5, 0.5, keys=('img', 'gen_img'))   an independent draw per image
    PackZoDiPairInputs             inputs, gen_inputs, data_samples (normalised by the model)
"""

from __future__ import annotations

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_random_params
from mmseg.datasets.transforms import PackSegInputs
from mmseg.registry import TRANSFORMS
from PIL import Image, ImageEnhance

from zodi_core.datasets.io import read_image, read_label

#: Relative aspect-ratio difference above which a pair is refused (a generated image may be at
#: the transfer resolution — short side 512, sides multiples of 64 — not the source's; SPEC §2).
MAX_ASPECT_DIFFERENCE = 0.15


def _read(reader, uri: str, sample_id: str, what: str, *args) -> np.ndarray:
    """``reader(uri, *args)``; a missing or unreadable file is named with the sample id."""
    try:
        return reader(uri, *args)
    except FileNotFoundError:
        raise FileNotFoundError(f"sample {sample_id!r}: {what} {uri} not found") from None
    except ValueError as err:
        raise ValueError(f"sample {sample_id!r}: {what}: {err}") from None


def _load_image(uri: str, sample_id: str, what: str) -> np.ndarray:
    rgb = _read(read_image, uri, sample_id, f"{what} image")
    return np.ascontiguousarray(rgb[..., ::-1])  # RGB → BGR, mmcv's convention


def _aspect_difference(shape: tuple[int, ...], reference: tuple[int, ...]) -> float:
    """Relative difference of the width/height ratios of two (H, W, ...) shapes."""
    a, ref = shape[1] / shape[0], reference[1] / reference[0]
    return abs(a - ref) / ref


def _run(transforms: list, results: dict) -> dict:
    for t in transforms:
        results = t(results)
        if results is None:
            raise ValueError(f"{t!r} dropped a paired sample; it cannot be used on pairs")
    return results


class _Transform(BaseTransform):
    def __repr__(self) -> str:  # the settings, as mmcv's own transforms show theirs
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


@TRANSFORMS.register_module()
class LoadZoDiSample(_Transform):
    """Load the image and label of one manifest row. ``scale=(W, H)`` resizes both at load
    time: the paper evaluates images *and labels* at 512×1024 (SPEC §4)."""

    role = "the"  # of the image, in messages

    def __init__(self, scale: tuple[int, int] | None = None) -> None:
        self.scale = tuple(scale) if scale is not None else None

    def transform(self, results: dict) -> dict:
        sid = results.get("sample_id", results["img_path"])
        img = _load_image(results["img_path"], sid, self.role)
        label = _read(read_label, results["seg_map_path"], sid, "label", results["label_format"])
        # A generated image (proxy evaluation) is at the transfer resolution while its label is
        # at the source's: with a target scale both are resized, if their aspects agree.
        if img.shape[:2] != label.shape and (
            self.scale is None or _aspect_difference(img.shape, label.shape) > MAX_ASPECT_DIFFERENCE
        ):
            raise ValueError(
                f"sample {sid!r}: {self.role} image is {img.shape[1]}x{img.shape[0]} but its "
                f"label is {label.shape[1]}x{label.shape[0]}"
            )
        if self.scale is not None:
            img = mmcv.imresize(img, self.scale, interpolation="bilinear")
            label = mmcv.imresize(label, self.scale, interpolation="nearest")
        results.update(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2])
        results.update(gt_seg_map=label, seg_fields=["gt_seg_map"], reduce_zero_label=False)
        return results


@TRANSFORMS.register_module()
class LoadZoDiPair(LoadZoDiSample):
    """Load a source image, its generated twin (resized to the source) and the shared label; a
    pair whose aspects differ more than :data:`MAX_ASPECT_DIFFERENCE` is no twin: refused."""

    role = "source"

    def transform(self, results: dict) -> dict:
        results = super().transform(results)
        img, sid = results["img"], results["sample_id"]
        if (gen := _load_image(results["gen_path"], sid, "generated")).shape[:2] != img.shape[:2]:
            if _aspect_difference(gen.shape, img.shape) > MAX_ASPECT_DIFFERENCE:
                raise ValueError(
                    f"sample {sid!r}: source and generated images differ in size "
                    f"({img.shape[1]}x{img.shape[0]} vs {gen.shape[1]}x{gen.shape[0]}) and in "
                    f"aspect ratio; the generated image is not a transfer of this source"
                )
            gen = mmcv.imresize(gen, (img.shape[1], img.shape[0]), interpolation="bilinear")
        results["gen_img"] = gen
        return results


@TRANSFORMS.register_module()
class ZoDiPairedTransforms(_Transform):
    """Apply geometric transforms to ``img`` + label, then replay them on ``gen_img`` (one draw
    via mmcv's ``cache_random_params``), so pixel (y, x) of both keeps the same label."""

    def __init__(self, transforms: list[dict | BaseTransform]) -> None:
        self.transforms = [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in transforms]

    def transform(self, results: dict) -> dict:
        gen_view = _image_view(results, "gen_img")
        with cache_random_params(self.transforms):
            results = _run(self.transforms, results)
            gen_view = _run(self.transforms, gen_view)
        if gen_view["img"].shape != results["img"].shape:
            raise ValueError(
                f"sample {results.get('sample_id')!r}: the paired transforms gave shapes "
                f"{results['img'].shape} and {gen_view['img'].shape}"
            )
        results["gen_img"] = gen_view["img"]
        return results


def _image_view(results: dict, key: str) -> dict:
    """``results`` seen as a single-image sample whose ``img`` is ``results[key]`` (no label)."""
    view = {k: v for k, v in results.items() if k not in ("gen_img", "gt_seg_map")}
    return dict(view, img=results[key], seg_fields=[])


@TRANSFORMS.register_module()
class ZoDiEachImage(_Transform):
    """Apply single-image photometric transforms (``PhotoMetricDistortion``, ...) to the source
    and the generated image, each its own draw (the paper's independent jitter)."""

    def __init__(self, transforms: list[dict | BaseTransform]) -> None:
        self.transforms = [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in transforms]

    def transform(self, results: dict) -> dict:
        for key in ("img", "gen_img"):
            results[key] = _run(self.transforms, _image_view(results, key))["img"]
        return results


#: torchvision's ColorJitter adjustments of a PIL image: PIL's blends with a degenerate image.
ENHANCERS = {
    "brightness": ImageEnhance.Brightness,
    "contrast": ImageEnhance.Contrast,
    "saturation": ImageEnhance.Color,
}


@TRANSFORMS.register_module()
class ZoDiColorJitter(_Transform):
    """torchvision's ``ColorJitter(brightness, contrast, saturation)`` of a PIL image on uint8 BGR
    images (factors in [1 − v, 1 + v], random order); each key its own draw, as the paper jitters."""

    def __init__(
        self,
        brightness: float = 0.5,
        contrast: float = 0.5,
        saturation: float = 0.5,
        keys: tuple[str, ...] = ("img",),
    ) -> None:
        self.factors = {"brightness": brightness, "contrast": contrast, "saturation": saturation}
        for name, v in self.factors.items():
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name}: expected a value in [0, 1], received {v}")
        self.keys = tuple(keys)

    def _jitter(self, img: np.ndarray) -> np.ndarray:
        pil = Image.fromarray(np.ascontiguousarray(img[..., ::-1]))  # BGR → RGB
        for op in np.random.permutation(list(self.factors)):
            if (v := self.factors[op]) > 0:
                pil = ENHANCERS[op](pil).enhance(np.random.uniform(1.0 - v, 1.0 + v))
        return np.ascontiguousarray(np.asarray(pil)[..., ::-1])

    def transform(self, results: dict) -> dict:
        for key in self.keys:
            results[key] = self._jitter(results[key])
        return results


@TRANSFORMS.register_module()
class PackZoDiPairInputs(PackSegInputs):
    """mmseg's ``PackSegInputs`` plus ``gen_inputs``: the generated image as a (3, H, W) uint8
    tensor, which :class:`~zodi_core.seg.segmentor.ZoDiDataPreProcessor` batches after the sources.
    """

    def __init__(self, meta_keys: tuple[str, ...] | None = None) -> None:
        keys = meta_keys or PackSegInputs().meta_keys  # mmseg's defaults
        super().__init__(meta_keys=tuple(dict.fromkeys([*keys, "sample_id", "gen_path"])))

    def transform(self, results: dict) -> dict:
        gen_inputs = super().transform({"img": results["gen_img"]})["inputs"]
        return dict(super().transform(results), gen_inputs=gen_inputs)
