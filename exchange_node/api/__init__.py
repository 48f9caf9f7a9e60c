"""aiohttp applications: the peer API (protobuf, mutual TLS) and the local API (JSON)."""
