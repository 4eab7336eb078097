"""The public Python API: ``Node`` (in-process, asyncio) and ``Client`` (blocking, HTTP)."""
