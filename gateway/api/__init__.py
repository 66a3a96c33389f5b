"""Thin HTTP adapters over the auth layer."""
