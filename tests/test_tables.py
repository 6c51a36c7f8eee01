"""bench/tables.py: the paper's Tables 1-2 in miniature, through the flows (issue 11 §2)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "tables.py"


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("bench_tables", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tables_write_section_replaces_only_the_marked_section(tables, tmp_path):
    doc = tmp_path / "fidelity.md"
    doc.write_text("# Title\n\nbefore\n")
    tables.write_section(doc, "first body\n")
    assert doc.read_text() == (f"# Title\n\nbefore\n\n{tables.BEGIN}\nfirst body\n{tables.END}\n")
    doc.write_text(doc.read_text() + "\n## after\n")
    tables.write_section(doc, "second body")
    text = doc.read_text()
    assert "first body" not in text
    assert text == f"# Title\n\nbefore\n\n{tables.BEGIN}\nsecond body\n{tables.END}\n## after\n"


def test_tables_spearman_matches_scipy_with_ties(tables):
    from scipy.stats import spearmanr

    x = [3.0, 1.0, 2.0, 2.0, 5.0, 4.0]
    y = [30.0, 12.0, 11.0, 25.0, 40.0, 40.0]
    assert tables.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert math.isnan(tables.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_tables_mean_std_is_the_sample_std(tables):
    assert tables.mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert tables.mean_std([4.0]) == (4.0, None)


def test_tables_models_folder_without_model_index_fails_with_one_line(tables, tmp_path):
    with pytest.raises(SystemExit, match=r"--models .*no model_index.json.*pass"):
        tables.main(["--quick", "--models", str(tmp_path), "--workdir", str(tmp_path / "w")])


def test_tables_unknown_domain_is_a_usage_error(tables, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        tables.main(["--domains", "night,dusk", "--models", str(tmp_path)])
    assert err.value.code == 2
    assert "--domains" in capsys.readouterr().err


@pytest.mark.slow
def test_tables_run_through_the_flows_and_write_both_tables(
    tables, prefect_harness, request, tmp_path
):
    """Every flow and both tables at the smallest size that trains and evaluates every variant:
    4 source images, 2 val, 2 target, 4 DDIM steps, 4 iterations (``--quick``'s 16/8/8, T=20,
    30 iterations took 100 s of the suite; the pocket models' own size sets the cost per image).
    """
    from zodi_core.pocket import pocket_models_dir

    try:  # the committed pocket models when the checkout has them, else the tiny test models
        models = pocket_models_dir()
    except FileNotFoundError:
        models = request.getfixturevalue("tiny_models_dir")
    doc = tmp_path / "fidelity.md"
    doc.write_text("# Fidelity\n\nkept\n")
    out_json = tmp_path / "tables.json"
    argv = ["--domains", "night", "--seeds", "0", "--n-train", "4", "--n-val", "2",
            "--n-target", "2", "--steps", "4", "--iters", "4", "--models", str(models),
            "--workdir", str(tmp_path / "w")]  # fmt: skip
    assert tables.main([*argv, "--write", str(doc), "--json", str(out_json)]) == 0

    result = json.loads(out_json.read_text())
    rows = result["rows"]
    assert [(r["domain"], r["variant"]) for r in rows] == [
        ("night", v) for v in ("source-only", "zodi", "sdedit", "inst", "wo_si", "wo_lsim")
    ]
    for r in rows:
        for column in ("real", "proxy", "layout"):
            assert len(r[column]) == 1, (r["variant"], column)  # one seed
            assert math.isfinite(r[column][0]) and 0.0 <= r[column][0] <= 100.0
    # ZoDi and w/o L_sim train on the same generated images: one layout number
    assert rows[1]["layout"] == rows[5]["layout"]
    assert result["spearman"]["n"] == 6
    assert set(result["spearman"]["per_domain"]) == {"night"}

    text = doc.read_text()
    assert text.startswith("# Fidelity\n\nkept\n")
    section = text.split(tables.BEGIN, 1)[1].split(tables.END, 1)[0]
    table_rows = [line for line in section.splitlines() if line.startswith("| night |")]
    labels = [line.split("|")[2].strip() for line in table_rows]
    assert labels == ["source only", "ZoDi", "SDEdit", "InST", "w/o SI", "w/o L_sim"]
    assert all(len(line.split("|")) == 7 for line in table_rows)  # 5 columns
    for heading in ("### Table 1", "### Table 2", "Spearman", "Command: `", "Machine: "):
        assert heading in section


def test_tables_markdown_shows_mean_and_std_per_row_and_the_correlations(tables):
    args = tables.parse_args(["--domains", "night,fog", "--seeds", "0,1", "--models", "M"])
    rows = []
    for i, d in enumerate(("night", "fog")):
        for j, variant in enumerate(args.variant_list):  # --variants all: Tables 1-2
            label, table, method, _ = tables.VARIANTS[variant]
            real = [10.0 * i + j, 10.0 * i + j + 2.0]
            rows.append(
                {"domain": d, "variant": variant, "label": label, "table": table,
                 "real": real, "proxy": [v + 1.0 for v in real],
                 "layout": [60.0, 62.0] if method is None else [50.0, 52.0]}
            )  # fmt: skip
    result = {
        "rows": rows,
        "spearman": tables.spearman_summary(rows),
        "seconds": {"data": 1.0, "train": 2.0, "total": 3.0},
        "train_seconds_per_run": {"source-only": 9.0},
        "models": "M",
    }
    assert result["spearman"]["all"] == pytest.approx(1.0)
    assert result["spearman"]["per_domain"] == {"night": pytest.approx(1.0), "fog": 1.0}
    text = tables.render_markdown(result, args, ["--domains", "night,fog"])
    assert "| fog | ZoDi | 12.0 ± 1.4 | 13.0 ± 1.4 | 51.0 ± 1.4 |" in text
    assert "| night | source only | 1.0 ± 1.4 | 2.0 ± 1.4 | 61.0 ± 1.4 |" in text
    assert "| w/o L_sim | 6.0 ± 1.4 | 16.0 ± 1.4 |" in text  # at a glance: night, fog
    assert "over models × domains +1.00 (n = 12)" in text
    assert "source-only 9.0 s per training run" in text
    # ZoDi is 1.0 above source-only in both domains: not above 2 std (2 x 1.41)
    assert "night +1.0 (not above 2 std = 2.8), fog +1.0 (not above 2 std = 2.8)" in text


def test_tables_variants_groups_names_and_the_filtered_line(tables):
    args = tables.parse_args(["--variants", "table1,filtered", "--models", "M"])
    assert args.variant_list == ["source-only", "zodi", "filtered"]
    assert args.method_list == ["zodi"]  # the filter scores ZoDi's own images
    assert tables.parse_args(["--models", "M"]).variant_list == [
        "source-only",
        "zodi",
        "sdedit",
        "inst",
        "wo_si",
        "wo_lsim",
    ]
    rows = [
        {"domain": "night", "variant": v, "label": tables.VARIANTS[v][0],
         "table": tables.VARIANTS[v][1], "real": real, "proxy": real, "layout": [50.0, 52.0]}
        for v, real in (("source-only", [4.0, 6.0]), ("zodi", [10.0, 12.0]),
                        ("filtered", [14.0, 16.0]))
    ]  # fmt: skip
    result = {
        "rows": rows, "spearman": tables.spearman_summary(rows), "seconds": {"total": 1.0},
        "train_seconds_per_run": {}, "models": "M",
    }  # fmt: skip
    text = tables.render_markdown(result, args, [])
    assert "### ZoDi with vs without the quality filter" in text
    assert "### Table 2" not in text
    assert "| night | ZoDi + quality filter | 15.0 ± 1.4 |" in text
    # filtered - ZoDi: +4.0, above 2 std (2 x 1.41)
    assert "real target mIoU: night +4.0 (above 2 std = 2.8)." in text


def test_tables_unknown_variant_is_a_usage_error(tables, capsys):
    with pytest.raises(SystemExit) as err:
        tables.parse_args(["--variants", "table1,nope", "--models", "M"])
    assert err.value.code == 2
    assert "--variants" in capsys.readouterr().err
