"""``zodi evaluate`` takes one final checkpoint or one per seed: neither or both is one usage line."""

from __future__ import annotations

from zodi_cli import main


def test_evaluate_needs_exactly_one_of_checkpoint_and_seeds(tmp_path, capsys):
    base = ["evaluate", "--config", "c.py", "--out", str(tmp_path / "report")]
    for extra in ([], ["--checkpoint", "a.pth", "--seeds", "b.pth,c.pth"]):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert err.startswith("zodi evaluate: error: give either --checkpoint URI or --seeds ")
    assert not (tmp_path / "report").exists()
