"""Neural-network building blocks: SDPA attention, 2D/3D RoPE, RMSNorm / SwiGLU / adaLN,
timestep embedding and LVSM-style camera tokens.

Import the submodules directly (``from scenetok.nn.attention import SelfAttention``); this package
``__init__`` stays import-free so listing components never pulls in torch.
"""
