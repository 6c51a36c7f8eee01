"""Thin Prefect tasks around zodi_core: each calls one core function, declares its cache policy
and retries, and passes references (URIs, digests, small configs) onward."""
