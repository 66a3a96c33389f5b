"""Authenticating reverse proxy: path normalisation, route table, header rules, forwarding."""
