"""Prefect artifacts people watch: images the UI can show (embedded or presigned), per-class IoU,
transfer progress; an artifact failure never fails the work it shows."""

from __future__ import annotations

import base64
import io
import re
import urllib.request

import numpy as np
import pytest
from fixtures_models import tiny_transfer_config
from PIL import Image

from zodi_core import layout, report, storage
from zodi_core.config import DatasetSpec, ReportConfig

_DATA_IMAGE = re.compile(r"!\[([^\]]*)\]\((data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+))\)")
_LINK_IMAGE = re.compile(r"!\[([^\]]*)\]\((https?://[^)\s]+)\)")


def _noise_png(w: int, h: int, seed: int = 0) -> bytes:
    from zodi_core.datasets.io import encode_png

    rng = np.random.default_rng(seed)
    return encode_png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _latest(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactCollectionFilter,
        ArtifactCollectionFilterKey,
    )

    with get_client(sync_client=True) as client:
        found = client.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=[key]))
        )
    assert len(found) == 1, f"no artifact {key}"
    return found[0]


def _decode(data_uri_b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data_uri_b64)))
    image.load()
    return image


# -- rendering (zodi_core, no Prefect) ------------------------------------------------------


def test_encode_for_embedding_keeps_a_small_png_and_shrinks_a_large_one_to_its_budget():
    small = _noise_png(16, 16)
    assert report.encode_for_embedding(small, 10_000) == (small, "image/png")

    big = _noise_png(600, 400)  # noise: ~720 kB as PNG, far over the budget
    data, mime = report.encode_for_embedding(big, 60_000)
    assert mime == "image/jpeg"
    assert len(report.data_uri(data, mime)) <= 60_000
    shrunk = _decode(base64.b64encode(data).decode())
    assert shrunk.format == "JPEG"
    assert shrunk.size[0] * 400 == shrunk.size[1] * 600  # downscaled, same aspect ratio

    assert report.encode_for_embedding(big, 300) is None  # nothing fits: linked instead


def test_image_sources_embed_local_images_within_the_artifact_budget(tmp_path):
    uris = [
        storage.write_bytes(str(tmp_path / f"g{i}.png"), _noise_png(400, 300, i)) for i in (0, 1)
    ]
    config = ReportConfig(embed_max_kb=100)
    sources, problems = report.image_sources([*uris, str(tmp_path / "missing.png")], config)
    assert set(sources) == set(uris)
    assert sum(len(s) for s in sources.values()) <= 100_000  # two images share the budget
    assert len(problems) == 1 and "missing.png" in problems[0]

    # presigned only: a local root has no URL, so nothing is embedded (the report links paths)
    assert report.image_sources(uris, ReportConfig(images="presigned")) == ({}, [])
    md = report.render_report_markdown({"sample_grids": {"night": uris[0]}}, sources.get)
    (match,) = _DATA_IMAGE.findall(md)
    w, h = _decode(match[3]).size  # noise does not compress: shrunk to fit 50 kB, same shape
    assert match[0] == "night" and w <= 400 and w * 300 == h * 400


def test_per_class_rows_one_row_per_class_one_column_per_model_and_target():
    from zodi_core.labels import CLASSES

    per_class = {c: float(i) for i, c in enumerate(CLASSES)}
    evaluations = {"zodi-night": {"acdc-night-val": {"per_class": per_class, "mIoU": 9.0}}}
    rows = report.per_class_rows(evaluations)
    assert [r["class"] for r in rows] == [*CLASSES, "mIoU"]
    assert rows[1] == {"class": CLASSES[1], "zodi-night / acdc-night-val": 1.0}
    assert rows[-1]["zodi-night / acdc-night-val"] == 9.0
    assert report.per_class_rows({}) == []


def test_local_storage_has_no_url_and_s3_refuses_an_expiry_past_seven_days(tmp_path):
    assert storage.url_for(str(tmp_path / "x.png"), 60) is None
    s3 = storage.S3Storage("s3://bucket/prefix", endpoint_url="http://127.0.0.1:9")
    with pytest.raises(storage.PermanentStorageError, match="1 to 604800 seconds"):
        s3.url_for("x.png", 8 * 24 * 3600)


# -- published through Prefect ----------------------------------------------------------------


def test_transfer_progress_ends_at_100_and_the_report_embeds_the_grid(
    prefect_harness, synthetic_root, tiny_models_dir, tmp_path
):
    """The real transfer flow on the synthetic set: its progress artifact ends at 100 %; the
    report artifact shows the sample grid as an embedded image of the grid's own size."""
    from flows.transfer import transfer_flow
    from tasks.report import render_sample_grid_task, write_report_task
    from zodi_core.datasets.ingest import ingest_dataset

    spec = DatasetSpec(dataset="cityscapes", root=str(synthetic_root / "cityscapes"))
    samples = ingest_dataset(spec, str(tmp_path / "samples.parquet"), progress=False)
    out = str(tmp_path / "artifacts")
    config = tiny_transfer_config(tiny_models_dir)
    result = transfer_flow(samples.manifest_uri, ["night"], out, config, shard_size=4)

    progress = _latest(layout.artifact_key("progress-night", out))
    assert progress.type == "progress" and progress.data == 100.0
    assert "2/2 shards (8/8 images)" in progress.description

    grid_uri = render_sample_grid_task(result["paired"]["night"], out, "night")
    write_report_task(
        {"transfer": result["domains"], "sample_grids": {"night": grid_uri}, "results": {}}, out
    )
    markdown = _latest(layout.artifact_key("report", out)).data
    (match,) = _DATA_IMAGE.findall(markdown)
    grid = Image.open(grid_uri)
    assert match[0] == "night" and _decode(match[3]).size == grid.size
    assert len(markdown) <= ReportConfig().embed_max_kb * 1000 + 10_000  # images + text


def test_a_progress_artifact_that_the_server_lost_logs_a_warning_and_the_count_goes_on(
    prefect_harness,
):
    """A real fault: the artifact is deleted on the server mid-transfer, so the update fails."""
    from prefect.client.orchestration import get_client

    from tasks.artifacts import TransferProgress
    from zodi_core.sharding import ShardRef

    shards = [
        ShardRef(index=i, samples_uri="m", sample_ids=("a", "b"), digest="d") for i in range(2)
    ]
    from prefect import flow

    @flow
    def watched_transfer() -> TransferProgress:
        progress = TransferProgress("night", "/tmp/lost-progress", shards, min_interval_s=0.0)
        assert progress.artifact_id is not None
        with get_client(sync_client=True) as client:
            client.delete_artifact(progress.artifact_id)
        progress.shard_done(shards[0])  # no exception: a warning, and no more API calls
        assert progress.artifact_id is None and progress.done_images == 2
        progress.shard_done(shards[1])
        return progress

    import logging

    class Records(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    records = Records()
    flow_logger = logging.getLogger("prefect.flow_runs")  # what get_run_logger() adapts
    flow_logger.addHandler(records)
    try:
        progress = watched_transfer()
    finally:
        flow_logger.removeHandler(records)
    (line,) = [x for x in records.lines if "not published" in x]
    assert line.startswith("artifact progress of night not published") and "404" in line
    assert progress.percent == 100.0


@pytest.mark.ceph
def test_report_on_s3_links_the_grid_by_a_presigned_url_that_serves_its_bytes(
    prefect_harness, s3_root, ceph_s3
):
    from tasks.report import write_report_task

    with storage.use_options(endpoint_url=ceph_s3.endpoint_url):
        grid = _noise_png(96, 64)
        grid_uri = storage.write_bytes(layout.sample_grid_uri(s3_root, "night"), grid)
        write_report_task({"sample_grids": {"night": grid_uri}, "results": {}}, s3_root)
    markdown = _latest(layout.artifact_key("report", s3_root)).data
    assert not _DATA_IMAGE.findall(markdown)  # a link, not the bytes, goes into Prefect's DB
    ((alt, url),) = _LINK_IMAGE.findall(markdown)
    assert alt == "night" and url.startswith(ceph_s3.endpoint_url) and "X-Amz-Signature=" in url
    assert "X-Amz-Expires=604800" in url  # SigV4, ReportConfig's default: 7 days
    with urllib.request.urlopen(url, timeout=10) as response:  # no credentials: the URL is enough
        assert response.read() == grid

    # embedded on request, as for a local root
    with storage.use_options(endpoint_url=ceph_s3.endpoint_url):
        write_report_task(
            {"sample_grids": {"night": grid_uri}, "results": {}},
            s3_root,
            ReportConfig(images="embedded"),
        )
    (match,) = _DATA_IMAGE.findall(_latest(layout.artifact_key("report", s3_root)).data)
    assert match[2] == "png" and base64.b64decode(match[3]) == grid


def test_report_markdown_without_sources_links_every_image(tmp_path):
    md = report.render_report_markdown(
        {
            "sample_grids": {"night": "/a/grids/night.png"},
            "evaluations": {"zodi-night": {"acdc": {"confusion_png": "/a/eval/c.png"}}},
        }
    )
    assert "- night: [/a/grids/night.png](/a/grids/night.png)" in md
    assert "- zodi-night · acdc: [/a/eval/c.png](/a/eval/c.png)" in md
    assert "![" not in md


def test_quality_histograms_and_worst_grids_are_shown_as_images(tmp_path):
    """The quality section's images go through image_sources like the grids: embedded (local)
    images decode, and without sources they stay links."""
    uris = {}
    for name, seed in (("hist", 1), ("worst", 2)):
        uris[name] = storage.write_bytes(str(tmp_path / f"{name}.png"), _noise_png(96, 32, seed))
    full = {
        "quality": {
            "histograms": uris["hist"],
            "domains": {
                "night": {
                    "rows": 4, "kept": 3, "dropped": 1, "worst_grid": uris["worst"],
                    "worst": [{"sample_id": "s1", "layout_miou": 12.5}],
                }
            },
        }
    }  # fmt: skip
    assert report.report_images(full) == [uris["hist"], uris["worst"]]
    sources, problems = report.image_sources(report.report_images(full), ReportConfig())
    assert problems == [] and set(sources) == {uris["hist"], uris["worst"]}
    md = report.render_report_markdown(full, sources.get)
    shown = re.findall(r"!\[([^\]]*)\]\(data:image/\w+;base64,([^)]+)\)", md)
    assert [title for title, _ in shown] == ["score histograms", "worst generations, night"]
    assert all(_decode(b64).size == (96, 32) for _, b64 in shown)
    plain = report.render_report_markdown(full)
    assert "![" not in plain and f"- night: [{uris['worst']}]({uris['worst']}) s1" in plain


def test_quality_and_regeneration_artifacts_survive_an_api_outage(tmp_path):
    """A real outage: the Prefect API URL points at a closed port. The quality figures and the
    regeneration report are still made and returned; each artifact is one logged warning."""
    import logging

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.quality import quality_figures_task
    from tasks.regenerate import publish_regeneration_report_task

    summary = {"rows": 2, "columns": {}}
    filtered = {"night": {"summary": summary, "worst": [{"sample_id": "a", "layout_miou": 1.0}]}}
    regeneration = {"version": 1, "statuses": [], "regenerated": [], "failed": {}}
    root = str(tmp_path / "root")
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("zodi.artifacts")  # where publish() logs outside a run
    logger.addHandler(handler)
    try:
        with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
            figures = quality_figures_task.fn(filtered, root)
            markdown = publish_regeneration_report_task.fn(regeneration)
    finally:
        logger.removeHandler(handler)
    assert open(figures["histograms"], "rb").read(4) == b"\x89PNG"
    assert markdown.startswith("# Prompt regeneration (prompt config version 1)")
    assert [w.split(":")[0] for w in warnings if "not published" in w] == [
        "artifact quality not published",
        "artifact regeneration report not published",
    ]
