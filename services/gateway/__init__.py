"""The public REST API gateway: validates user specs, resolves ids and names, and writes service objects to
the store. Stateless; run as many instances as wanted (`python -m services.gateway`)."""
