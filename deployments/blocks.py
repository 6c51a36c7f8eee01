"""Result-storage blocks: Prefect persists task results (and so cache records) to S3 through a
prefect-aws ``S3Bucket`` block, which must be saved server-side before a flow can use it."""

from __future__ import annotations

from prefect_aws import AwsCredentials, S3Bucket
from prefect_aws.client_parameters import AwsClientParameters


def save_s3_result_storage(
    name: str, root: str, endpoint_url: str | None = None, region: str | None = None
) -> S3Bucket:
    """Save (idempotently) and return an ``S3Bucket`` block for ``root`` = ``s3://bucket/prefix``.
    No credentials in the block: each worker's boto3 finds them in the standard AWS chain."""
    if not root.startswith("s3://"):
        raise ValueError(f"root: expected s3://bucket[/prefix], received {root!r}")
    bucket, _, prefix = root.removeprefix("s3://").partition("/")
    params = AwsClientParameters(endpoint_url=endpoint_url)
    block = S3Bucket(
        bucket_name=bucket,
        bucket_folder=prefix.strip("/"),
        credentials=AwsCredentials(region_name=region, aws_client_parameters=params),
    )
    block.save(name, overwrite=True)
    return S3Bucket.load(name)
