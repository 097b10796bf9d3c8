"""Generated stubs; see clients/python/generate.py."""
