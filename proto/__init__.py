"""NSM v0 wire contract: the .proto sources and their generated stubs (see generate.py)."""
