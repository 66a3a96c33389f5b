"""The proxied request's stages over one Principal: authenticate → authorize → mutate."""
