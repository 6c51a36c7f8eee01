"""ZoDi model adaptation for any MMSeg segmentor (SPEC §3, paper Eq. 6–8).

:class:`ZoDiSegmentor` wraps a segmentor config (any backbone, neck and heads) and adds the
similarity loss between the backbone features of each source image I and its generated twin I'::

    L = λ·(1 − cos(GAP(F(I)), GAP(F(I')))) + L_seg(I, y) + L_seg(I', y)

Two schemes, equal in loss and gradient when BatchNorm is frozen:

- ``release`` (the authors' release): L_seg(I) + λ·L_sim, backward; L_seg(I'), backward; one
  step. BatchNorm statistics see each domain's batch on its own.
- ``concat``: one forward of [I; I'] (BatchNorm mixes both domains); mean-reduced losses over 2N
  are (L(I) + L(I')) / 2, so doubled for Eq. 8. Fewer backbone passes; a 2N graph at once. The
  only scheme under DDP (mmengine's wrapper calls ``forward(mode='loss')``, not ``train_step``).

``ce_src``/``ce_gen`` are logged only (not added to the total again).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.model import BaseDataPreprocessor, BaseModel
from mmengine.optim import OptimWrapper
from mmseg.registry import MODELS
from mmseg.utils import add_prefix
from torch import Tensor, nn

from zodi_core.seg.losses import scale_losses, select_stage, similarity_loss, sum_losses

SCHEMES = ("release", "concat")
#: Metainfo key marking each data sample of a paired batch as "source" or "generated".
ROLE_KEY = "zodi_role"


@MODELS.register_module()
class ZoDiDataPreProcessor(BaseDataPreprocessor):
    """Batch a paired batch as one 2N batch [sources; generated] with the wrapped preprocessor.

    ``inputs`` and ``gen_inputs``: N (3, H, W) uint8 each → ``inputs`` (2N, 3, H, W) float32
    normalised by ``inner``, and 2N data samples (the second N tagged ``generated``). A batch
    without ``gen_inputs`` goes through ``inner`` unchanged.
    """

    def __init__(self, inner: dict | nn.Module) -> None:
        super().__init__()
        self.inner = MODELS.build(inner) if isinstance(inner, dict) else inner

    def forward(self, data: dict, training: bool = False) -> dict:
        if (gen := data.get("gen_inputs")) is None:
            return self.inner(data, training)
        samples = list(data["data_samples"])  # PackZoDiPairInputs gives each its generated image
        gen_samples = [copy.deepcopy(s) for s in samples]
        for s, g in zip(samples, gen_samples, strict=True):
            s.set_metainfo({ROLE_KEY: "source"})
            g.set_metainfo({ROLE_KEY: "generated"})
        batch = {"inputs": [*data["inputs"], *gen], "data_samples": samples + gen_samples}
        return self.inner(batch, training)


@contextmanager
def _capture_forward(module: nn.Module) -> Iterator[list[Any]]:
    """Record ``module.forward`` outputs, including direct ``self.forward(x)`` calls (mmseg's
    ``BaseDecodeHead.loss`` calls ``self.forward``, which bypasses forward hooks)."""
    outputs: list[Any] = []
    original = module.forward

    def recording(*args: Any, **kwargs: Any) -> Any:
        outputs.append(original(*args, **kwargs))
        return outputs[-1]

    module.forward = recording
    try:
        yield outputs
    finally:
        del module.forward  # back to the class's method


def _head_loss(head: nn.Module, logits: Tensor, data_samples: list) -> Tensor:
    """The decode head's loss terms on some of its logits, for logging; not
    ``BaseDecodeHead.loss_by_feat``, whose top-k accuracy doubled a CPU step's time."""
    label = torch.stack([s.gt_sem_seg.data for s in data_samples]).squeeze(1)
    logits = F.interpolate(
        logits, size=label.shape[-2:], mode="bilinear", align_corners=head.align_corners
    )
    terms = head.loss_decode if isinstance(head.loss_decode, nn.ModuleList) else [head.loss_decode]
    return sum(t(logits, label, ignore_index=head.ignore_index).detach() for t in terms)


@MODELS.register_module()
class ZoDiSegmentor(BaseModel):
    """Any mmseg segmentor plus ZoDi's similarity loss on paired batches (see module doc).

    ``lambda_sim``: λ of Eq. 8; ``feature_stage``: the backbone output that is F (-1: last);
    ``data_preprocessor`` (the Runner's top-level one) serves a segmentor config without one.
    """

    def __init__(
        self,
        segmentor: dict | nn.Module,
        lambda_sim: float = 0.1,
        feature_stage: int = -1,
        scheme: str = "release",
        data_preprocessor: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        if scheme not in SCHEMES:
            raise ValueError(
                f"ZoDiSegmentor.scheme: expected one of {SCHEMES}, received {scheme!r}"
            )
        super().__init__(data_preprocessor=None, init_cfg=init_cfg)
        if isinstance(segmentor, dict):
            inner = segmentor.get("data_preprocessor") or data_preprocessor
            segmentor = MODELS.build(dict(segmentor, data_preprocessor=inner))
        self.segmentor = segmentor  # an mmseg segmentor: F is its backbone's output
        self.lambda_sim = float(lambda_sim)
        self.feature_stage = int(feature_stage)
        self.scheme = scheme
        self.data_preprocessor = ZoDiDataPreProcessor(self.segmentor.data_preprocessor)

    def __getattr__(self, name: str) -> Any:
        # Outside paired training the wrapper behaves as the wrapped segmentor (backbone,
        # decode_head, num_classes, with_neck, ...).
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("segmentor"), name)

    def forward(self, inputs: Tensor, data_samples: list | None = None, mode: str = "tensor"):
        if mode == "loss":
            return self.loss(inputs, data_samples)
        return self.segmentor(inputs, data_samples, mode)

    @staticmethod
    def num_pairs(data_samples: list) -> int:
        """N for a paired batch of 2N samples ([sources; generated]), 0 for a plain batch."""
        roles = [s.metainfo.get(ROLE_KEY) for s in data_samples]
        if not any(roles):
            return 0
        n = len(roles) // 2
        if len(roles) % 2 or roles != ["source"] * n + ["generated"] * n:
            raise ValueError(
                f"data_samples: expected N sources followed by their N generated twins, "
                f"received roles {roles}"
            )
        return n

    def _similarity_terms(self, f_src: Tensor, f_gen: Tensor) -> dict[str, Tensor]:
        loss_sim, cos = similarity_loss(f_src, f_gen, self.lambda_sim)
        return {"loss_sim": loss_sim, "cos_mean": cos.detach().mean()}

    def loss(self, inputs: Tensor, data_samples: list) -> dict[str, Tensor]:
        """Losses of a batch; a paired batch ((2N, 3, H, W) float32 [I; I']) gets the ``concat``
        scheme's Eq. 8 in one forward."""
        if (n := self.num_pairs(data_samples)) == 0:
            return self.segmentor.loss(inputs, data_samples)
        head = self.segmentor.decode_head  # a ModuleList (cascade) records no logits
        with _capture_forward(self.segmentor.backbone) as feats, _capture_forward(head) as logits:
            losses = self.segmentor.loss(inputs, data_samples)
        f = select_stage(feats[0], self.feature_stage)
        # Mean-reduced losses over [I; I'] are (L(I) + L(I')) / 2 → x2 is the sum of Eq. 8.
        out = {**scale_losses(losses, 2.0), **self._similarity_terms(f[:n], f[n:])}
        if logits:
            with torch.no_grad():
                out["ce_src"] = _head_loss(head, logits[0][:n], data_samples[:n])
                out["ce_gen"] = _head_loss(head, logits[0][n:], data_samples[n:])
        return out

    def source_pass(self, src: Tensor, gen: Tensor, src_samples: list) -> dict[str, Tensor]:
        """Release scheme, first backward: L_seg(I) + λ·L_sim (generated features attached)."""
        with _capture_forward(self.segmentor.backbone) as feats:
            losses = self.segmentor.loss(src, src_samples)
        out = add_prefix(losses, "src")
        stage = self.feature_stage
        f_src, f_gen = (select_stage(f, stage) for f in (feats[0], self.segmentor.backbone(gen)))
        out.update(self._similarity_terms(f_src, f_gen))
        out["ce_src"] = sum_losses(losses, "decode.")
        return out

    def generated_pass(self, gen: Tensor, gen_samples: list) -> dict[str, Tensor]:
        """Release scheme, second backward: L_seg(I')."""
        losses = self.segmentor.loss(gen, gen_samples)
        return dict(add_prefix(losses, "gen"), ce_gen=sum_losses(losses, "decode."))

    def train_step(self, data: dict, optim_wrapper: OptimWrapper) -> dict[str, Tensor]:
        """One optimizer step per batch of pairs (the ``release`` scheme: two backward passes)."""
        if self.scheme == "concat" or data.get("gen_inputs") is None:  # no pairs: one pass
            return super().train_step(data, optim_wrapper)
        with optim_wrapper.optim_context(self):
            data = self.data_preprocessor(data, True)
        inputs, samples = data["inputs"], data["data_samples"]
        n = self.num_pairs(samples)
        if (counts := getattr(optim_wrapper, "_accumulative_counts", 1)) != 1:
            raise ValueError(
                f"optim_wrapper.accumulative_counts: the release scheme already accumulates two "
                f"backward passes per step; expected 1, received {counts} (use scheme='concat')"
            )
        # Pass 1 (Eq. 6 + CE of the source), backward now so its graph is freed before pass 2.
        with optim_wrapper.optim_context(self):
            losses1 = self.source_pass(inputs[:n], inputs[n:], samples[:n])
        loss1, log1 = self.parse_losses(losses1)
        optim_wrapper.backward(loss1)
        # Pass 2 (CE of the generated image); gradients accumulate, then one step.
        with optim_wrapper.optim_context(self):
            losses2 = self.generated_pass(inputs[n:], samples[n:])
        loss2, log2 = self.parse_losses(losses2)
        optim_wrapper.update_params(loss2)
        return OrderedDict(loss=(log1.pop("loss") + log2.pop("loss")).detach(), **log1, **log2)
