"""Quality control of generated images: per-image scores, the training filter, failure grids.

Scores (issue 14): layout mIoU / pixel accuracy (%) of a segmentation model's prediction on the
generated image against the *source* label (the paper's Fig. 6 failures score low); ``clip_score``
= cos(E_img(gen), E_txt(prompt)); ``clip_direction`` = cos(E_img(gen) - E_img(src),
E_txt(prompt) - E_txt("driving")) (StyleGAN-NADA's directional similarity). The filter never
deletes a row: it sets ``kept`` and ``drop_reason``. Choosing a strength by these scores:
:mod:`zodi_core.transfer.tune`.
"""
