"""A full disk (issue 22): ``zodi transfer`` exits 1 (2 is for usage and configuration), its last
line is the error and names the file; on a real full file system (a tiny tmpfs in a private mount
namespace) where the machine allows one, else under a real file-size limit (EFBIG)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zodi_core.config import DatasetSpec

REPO = Path(__file__).resolve().parents[1]

_LIMITED = textwrap.dedent(
    """
    import resource, sys
    from zodi_cli import main
    limit = int(sys.argv[1])  # every write past it fails with EFBIG, as a full disk with ENOSPC
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    sys.exit(main(sys.argv[2:]))
    """
)


def tmpfs_available() -> bool:
    """A private mount namespace with a small tmpfs (root, or unprivileged user namespaces)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
    )  # fmt: skip
    return probe.returncode == 0


def full_disk_command(
    folder: Path, room: int, zodi_args: list[str], listing: Path, file_limit: int | None = None
):
    """(command, the error's wording): ``zodi ARGS`` with only ``room`` bytes writable in
    ``folder`` (a tmpfs), else with files limited to ``file_limit`` bytes (default ``room``: the
    limit is per file), listing the folder's files into ``listing`` when it has failed."""
    folder.mkdir(parents=True, exist_ok=True)
    args = " ".join(shlex.quote(a) for a in zodi_args)
    after = f"rc=$?; find {folder} -type f > {listing}; exit $rc"
    if tmpfs_available():
        script = (
            f"mount -t tmpfs -o size={room} tmpfs {folder} && "
            f"{sys.executable} -m zodi_cli {args}; {after}"
        )
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", script]
        return cmd, "no space left on the device"
    limit = room if file_limit is None else file_limit
    script = f"{sys.executable} -c {shlex.quote(_LIMITED)} {limit} {args}; {after}"
    return ["sh", "-c", script], "file too large"


@pytest.mark.slow
def test_zodi_transfer_on_a_full_disk_exits_1_with_the_error_line_last(
    synthetic_root, tiny_models_dir, tmp_path
):
    from zodi_core.datasets.ingest import ingest_dataset

    spec = DatasetSpec(dataset="cityscapes", root=str(synthetic_root / "cityscapes"), split="val")
    samples = ingest_dataset(spec, str(tmp_path / "s.parquet"), progress=False).manifest_uri
    out, listing = tmp_path / "out", tmp_path / "listing.txt"
    args = ["transfer", "--manifest", samples, "--domain", "night", "--models",
            str(tiny_models_dir), "--preset", "demo", "--steps", "2", "--out", str(out)]  # fmt: skip
    # room for about one image (tmpfs), or files smaller than an image (file-size limit)
    cmd, wording = full_disk_command(out, 24 * 1024, args, listing, file_limit=4096)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    last = lines[-1]
    assert last.startswith("zodi transfer: error: ") and wording in last, proc.stderr[-2000:]
    assert str(out / "images" / "night") in last  # names the image it could not write
    assert "\r" not in proc.stderr.strip().rsplit("\n", 1)[-1]  # no progress bar after it
    files = [Path(line).name for line in listing.read_text().splitlines()]
    assert not [f for f in files if f.endswith(".part")], files  # no half-written file left
