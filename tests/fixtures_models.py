"""Fixtures (placeholder; filled by the owning area)."""
