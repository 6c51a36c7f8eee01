"""ZoDi's MMSegmentation components; importing this package (a config's
``custom_imports = dict(imports=['zodi_core.seg'])``) registers the datasets, transforms,
segmentor and hooks. :mod:`.adapt` adds ZoDi to any mmseg config in code; :mod:`.train` trains
(:mod:`.worklock`: one run per work dir; :mod:`.resume`: whether a run resumes its work dir).
"""

from zodi_core.seg import datasets, hooks, segmentor, transforms

__all__ = ["datasets", "hooks", "segmentor", "transforms"]
