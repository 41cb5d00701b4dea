"""Pieces in-process: the store, the renderers, the providers against fakes, the docs, the import graph."""
