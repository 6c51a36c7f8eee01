"""ZoDi's MMSegmentation components, loaded by a config's ``custom_imports``::

    custom_imports = dict(imports=['zodi_core.seg'], allow_failed_imports=False)

Importing this package registers, in MMSeg's registries: the datasets ``ZoDiPairedDataset`` and
``ZoDiManifestDataset`` (:mod:`.datasets`), the transforms of the paired pipeline
(:mod:`.transforms`), the ``ZoDiSegmentor`` wrapper and its data preprocessor (:mod:`.segmentor`),
the ``ZoDiSyncWorkDirHook`` and ``ZoDiProgressHook`` (:mod:`.hooks`). Configs (plain segmentation
recipes) live in ``configs/``; :mod:`.adapt` adds ZoDi to any mmseg config in code; the entry
points are :mod:`.train` (one work dir at a time: :mod:`.worklock`; whether to resume:
:mod:`.resume`), :mod:`zodi_core.evaluation` and :mod:`.predict`.
"""

from zodi_core.seg import datasets, hooks, segmentor, transforms

__all__ = ["datasets", "hooks", "segmentor", "transforms"]
