"""DL3DV-10K / DL3DV-140 scenes for scenetok.

The dataset is registered as ``dl3dv`` (entry point group ``scenetok.datasets``); the class lives
in :mod:`scenetok_plugin_dl3dv.dataset`, the benchmark split and evaluation-index tools in
:mod:`scenetok_plugin_dl3dv.benchmark`. Nothing heavy is imported here, so listing plugins stays
fast.
"""

__version__ = "0.2.0"
