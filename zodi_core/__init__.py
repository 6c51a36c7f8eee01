"""ZoDi core library: config, datasets, condition maps, transfer sampler, manifests, storage,
MMSegmentation components and evaluation. Never imports Prefect; runs on CPU without network."""

__version__ = "0.1.0"
