"""One middleware per module, each built by a keyword-only factory."""
