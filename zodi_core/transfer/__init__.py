"""Zero-shot image transfer (SPEC §2): ``models`` (loader), ``sampler``, ``lineage`` (digests),
``runner`` (manifest in, images and manifest out), ``preview`` and ``tune`` (strength).

Import from the submodules: the sampler alone (the GPU check, bench) then does not import the
runner's Parquet and storage stack.
"""
