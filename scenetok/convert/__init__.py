"""Checkpoint converters: map released weights (LDM / original layouts) to the modules scenetok builds.

Submodules are imported on demand (``scenetok.convert.vavae``); this package imports nothing heavy.
"""
