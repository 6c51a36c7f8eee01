"""ZoDi's MMSegmentation components, loaded by a config's ``custom_imports``::

    custom_imports = dict(imports=['zodi_core.seg'], allow_failed_imports=False)

Importing this package registers, in MMSeg's registries: the datasets ``ZoDiPairedDataset`` and
``ZoDiManifestDataset`` (:mod:`.datasets`), the transforms of the paired pipeline
(:mod:`.transforms`), the ``ZoDiSegmentor`` wrapper and its data preprocessor (:mod:`.segmentor`),
and the ``ZoDiSyncWorkDirHook`` (:mod:`.hooks`). Configs live in ``configs/``; training and
evaluation entry points in :mod:`.train` and :mod:`zodi_core.evaluation`.
"""

from zodi_core.seg import datasets, hooks, segmentor, transforms

__all__ = ["datasets", "hooks", "segmentor", "transforms"]
