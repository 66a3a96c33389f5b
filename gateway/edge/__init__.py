"""The edge: the gateway's listener, proxying plain requests without aiohttp's server.

See ``server`` for which requests it takes and how the rest reaches aiohttp.
"""
