"""The one publisher of the Prefect artifacts people watch in the UI: publishing one never fails
the work it shows (an artifact is a view; the outputs are in storage)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.exceptions import MissingContextError

from zodi_core import layout
from zodi_core.sharding import ShardRef

T = TypeVar("T")


def publish(what: str, create: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Call an artifact function; on any error log one warning naming ``what`` and return None."""
    try:
        return create(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - an artifact (API down, refused, a rendering bug) never fails the work
        try:
            logger: Any = get_run_logger()
        except MissingContextError:
            logger = logging.getLogger("zodi.artifacts")
        logger.warning("artifact %s not published: %s: %s", what, type(err).__name__, err)
        return None


def publish_table(kind: str, rows: list[dict[str, Any]], root: str, description: str) -> None:
    """A table artifact keyed per experiment (``layout.artifact_key``), when there are rows."""
    if rows:
        key = layout.artifact_key(kind, root)
        publish(kind, create_table_artifact, table=rows, key=key, description=description)


def publish_markdown(what: str, key: str, render: Callable[[], str], description: str) -> None:
    """A Markdown artifact of ``render()`` (rendering it is part of publishing: never fails)."""
    publish(
        what, lambda: create_markdown_artifact(markdown=render(), key=key, description=description)
    )


class TransferProgress:
    """A progress artifact of one domain's transfer: % of images whose shard finished. Keyed per
    experiment and domain, or (``keyed=False``: a fan-out child) on the flow run only; updates
    throttled to one per ``min_interval_s`` so thousands of shards cost tens of API calls."""

    def __init__(
        self,
        domain: str,
        out_root: str,
        shards: list[ShardRef],
        *,
        keyed: bool = True,
        min_interval_s: float = 2.0,
    ) -> None:
        self.domain = domain
        self.total_shards = len(shards)
        self.total_images = sum(len(s.sample_ids) for s in shards)
        self.done_shards = self.done_images = self.failed_shards = 0
        self.min_interval_s = min_interval_s
        key = layout.artifact_key(f"progress-{domain}", out_root) if keyed else None
        self.artifact_id: UUID | None = self._publish(create_progress_artifact, key=key)
        self._last = time.monotonic()

    @property
    def percent(self) -> float:
        if not self.total_images:
            return 100.0
        return round(100.0 * self.done_images / self.total_images, 1)

    def _publish(self, create: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        failed = f", {self.failed_shards} failed" if self.failed_shards else ""
        description = (
            f"transfer to {self.domain}: {self.done_shards}/{self.total_shards} shards "
            f"({self.done_images}/{self.total_images} images) finished{failed}"
        )
        what = f"progress of {self.domain}"
        return publish(what, create, *args, self.percent, description=description, **kwargs)

    def shard_done(self, shard: ShardRef, failed: bool = False) -> None:
        """Count one finished shard; update the artifact when due."""
        self.done_shards += 1
        self.done_images += len(shard.sample_ids)
        self.failed_shards += int(failed)
        due = time.monotonic() - self._last >= self.min_interval_s
        if self.artifact_id is None or not (due or self.done_shards == self.total_shards):
            return
        self._last = time.monotonic()
        # the API failed once (None): stop asking for this transfer
        self.artifact_id = self._publish(update_progress_artifact, self.artifact_id)
