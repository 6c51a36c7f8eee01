"""Prefect deployments: prefect.yaml, the GPU Kubernetes job template, blocks, `zodi deploy`."""
