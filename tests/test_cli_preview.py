"""``zodi preview`` checks its image and label pair before it loads any model (the sampler's own
``validate_pair``: one rule, one message)."""

from __future__ import annotations

import numpy as np
import pytest

from zodi_cli import main
from zodi_core.datasets.io import encode_png


def test_preview_refuses_a_label_of_another_size_before_loading_the_models(
    tmp_path, capsys, monkeypatch
):
    import zodi_core.transfer.models as models

    monkeypatch.setattr(models, "load_components", lambda *a, **k: pytest.fail("models loaded"))
    (tmp_path / "models").mkdir()
    (tmp_path / "x.png").write_bytes(encode_png(np.zeros((8, 16, 3), np.uint8)))
    (tmp_path / "l.png").write_bytes(encode_png(np.zeros((4, 16), np.uint8)))
    rc = main([
        "preview", "--image", str(tmp_path / "x.png"), "--label", str(tmp_path / "l.png"),
        "--label-format", "train_ids", "--domain", "night", "--models", str(tmp_path / "models"),
        "--out", str(tmp_path / "p.png"),
    ])  # fmt: skip
    assert rc == 2
    assert capsys.readouterr().err.splitlines() == [
        "zodi preview: error: --image/--label: label size 16x4 differs from image size 16x8"
    ]
    assert not (tmp_path / "p.png").exists()
