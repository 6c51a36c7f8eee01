"""Quality control of generated images: per-image scores, the training filter, failure grids.

Two kinds of score per generated image (issue 14), stored in the transfer-schema columns
``layout_miou``, ``layout_pixel_acc``, ``clip_score``, ``clip_direction``:

- **layout consistency**: a segmentation model (any mmseg config + checkpoint; in the pipeline the
  run's own source-only model) predicts on the generated image; mIoU and pixel accuracy (percent)
  of that prediction against the *source* label. A generation that adds, loses or deforms objects
  (the paper's Fig. 6) no longer fits its label and scores low.
- **prompt alignment** (CLIP): ``clip_score`` = cos(E_img(generated), E_txt(prompt)), and
  ``clip_direction`` = cos(E_img(generated) - E_img(source), E_txt(prompt) - E_txt("driving")):
  did the image move from the source towards the domain the prompt names (the directional CLIP
  similarity of StyleGAN-NADA / InstructPix2Pix), independent of how "prompt-like" the source is.

The filter never deletes a row: it sets ``kept`` and ``drop_reason``; the training manifest is
the kept rows. Modules by job: ``clip``, ``scores``, ``filtering``, ``figures``; choosing a
strength by these scores runs the transfer: :mod:`zodi_core.transfer.tune`.
"""
