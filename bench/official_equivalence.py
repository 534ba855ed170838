"""Imported official weights give the official modules' outputs (needs a checkout of the official code).

Builds the official compressor and renderer (github.com/mohammadasim98/scenetok) at test size with
random weights, saves them as a Lightning-style checkpoint, and compares:

1. RE10K structure (VA-VAE context, Video-DC-AE-shaped targets): ``import_official`` -> run
   directory -> ``SceneTok`` from that run, against the official modules' forward passes;
2. Wan structure (17-frame chunks, RoPE restarting per chunk, the legacy camera channel order):
   the official renderer against :class:`DiTDecoder` loaded through ``official_key_map()`` with the
   switches the importer sets for ``dl3dv_wan``.

flash-attn is replaced by ``scaled_dot_product_attention`` (same maths, fp32 on CPU). Prints the
largest absolute differences::

    python bench/official_equivalence.py --official /tmp/official
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "official_keys"))


def sdpa_flash(q, k, v, dropout_p=0.0, causal=False, **_):
    """flash_attn_func's (B, L, H, D) layout on top of SDPA."""
    out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                           is_causal=causal)
    return out.transpose(1, 2)


def rotate_half(x):
    """rotary-embedding-torch's ``rotate_half``: interleaved pairs (x1, x2) -> (-x2, x1)."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def official_modules(root: Path, spec: dict, seed: int):
    import make_keysets

    make_keysets.install_stubs()
    sys.modules["flash_attn"].flash_attn_func = sdpa_flash
    sys.modules["rotary_embedding_torch.rotary_embedding_torch"].rotate_half = rotate_half
    sys.path.insert(0, str(root))
    comp_node, den_node, force_incorrect = make_keysets.module_configs(root, spec)
    mvae = importlib.import_module("src.model.compressor.mvae_compressor")
    den = importlib.import_module("src.model.denoiser.lightningdit")
    ray = importlib.import_module("src.model.camera.ray")
    lvsm = importlib.import_module("src.model.camera.embedding.lvsm_embed")
    dropped: list[str] = []

    def camera(node):
        node = dict(node)
        emb = make_keysets.build(lvsm.LVSMEmbeddingCfg, node.pop("embedding"), dropped, "e")
        return make_keysets.build(ray.RayCfg, {**node, "embedding": emb}, dropped, "c")

    comp_cfg = make_keysets.build(mvae.MVAECompressorCfg, {
        **comp_node, "camera": camera(comp_node["camera"]),
        "kwargs": make_keysets.build(mvae.AggregatorKwargsCfg, comp_node["kwargs"], dropped, "k")}, dropped, "c")
    den_cfg = make_keysets.build(den.LightningDiTCfg, {
        **den_node, "camera": camera(den_node["camera"]),
        "kwargs": make_keysets.build(den.LightningDiTKwargsCfg, den_node["kwargs"], dropped, "k")}, dropped, "d")
    wan = spec["target"] == "wan"
    temporal = 1 if wan and force_incorrect else 4
    compressor = mvae.MVAECompressor(comp_cfg, in_channels=32, num_views=spec["context_views"], temporal_downsample=1)
    denoiser = den.LightningDiT(den_cfg, cond_dim=compressor.output_dim, num_scene_tokens=compressor.num_scene_tokens,
                                num_views=spec["target_views"], temporal_downsample=temporal, using_wan=wan)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in (compressor, denoiser):
            for parameter in module.parameters():  # adaLN-zero etc. would hide mapping mistakes
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return compressor.eval(), denoiser.eval(), importlib.import_module("src.model.types")


def cameras(batch: int, views: int, generator: torch.Generator):
    from scenetok.testing.contracts import random_cameras

    return random_cameras(batch, views, generator)


def compare_re10k(root: Path) -> dict[str, float]:
    import make_keysets

    from scenetok.convert.official import OfficialConfig, import_official
    from scenetok.model import SceneTok

    compressor, denoiser, types = official_modules(root, make_keysets.TINY, seed=0)
    state = {f"compressor.{k}": v for k, v in compressor.state_dict().items()}
    state.update({f"denoiser.{k}": v for k, v in denoiser.state_dict().items()})
    config = OfficialConfig(name="tiny", recipe=str(ROOT / "tests/fixtures/official_keys/tiny_recipe.yaml"),
                            compat=("decoder.camera_bf16_rounding=true",), signature={})
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"state_dict": state, "global_step": 1}, f"{tmp}/tiny.ckpt")
        import_official(f"{tmp}/tiny.ckpt", f"{tmp}/run", config=config, configs={"tiny": config})
        model = SceneTok.from_pretrained(f"{tmp}/run")

    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 3, 32, 8, 8, generator=generator)
    context = cameras(2, 3, generator)
    noisy = torch.randn(2, 2, 8, 4, 4, generator=generator)
    t = torch.rand(2, 2, generator=generator) * 999
    target = cameras(2, 8, generator)
    with torch.no_grad():
        ours = model.token_compressor(latents, context)
        theirs, _ = compressor._forward(types.CompressorInputs(
            view=latents, pose=types.CameraInputs(context.intrinsics.clone(), context.extrinsics.clone())))
        tokens = ours.mean
        out = model.decoder(noisy, t, target, tokens)
        ref, _ = denoiser._forward(types.DenoiserInputs(
            view=noisy, pose=types.CameraInputs(target.intrinsics.clone(), target.extrinsics.clone()), timestep=t,
            state=denoiser.cnd_proj(tokens)), temporal_downsample=4)
    return {"compressor mean, max |diff|": (ours.mean - theirs.mean).abs().max().item(),
            "compressor logvar, max |diff|": (ours.logvar - theirs.logvar).abs().max().item(),
            "renderer (RE10K structure), max |diff|": (out - ref).abs().max().item(),
            "renderer (RE10K) output, max |value|": ref.abs().max().item()}


def compare_wan(root: Path) -> dict[str, float]:
    import make_keysets

    from scenetok import registry
    from scenetok.interfaces import LatentSpec
    from scenetok.nn.utils import rename_key

    spec = {**make_keysets.TINY, "experiment": "scenetok_va-wan_shift4_dl3dv_finetuned", "target": "wan",
            "target_views": 10,
            "denoiser": {"input_shape": [4, 4], "camera": {"input_shape": [16, 16], "embedding": {"patch_size": 4}},
                         "kwargs": {"hidden_size": 64, "depth": 2, "num_heads": 4, "in_channels": 8}}}
    _, denoiser, types = official_modules(root, spec, seed=2)
    cls = registry.get_component("decoder", "dit")
    config = cls.Config(width=64, depth=2, heads=4, window=10, rope_chunks=2, camera_resolution=16, camera_patch_size=4,
                        camera_legacy_channel_order=True, camera_bf16_rounding=True)
    ours = cls(config, in_channels=8, latent_size=(4, 4), token_dim=16,
               latent_spec=LatentSpec(8, 64, 4, first_frame_alone=True, chunk_frames=17))
    state = {rename_key(k, cls.official_key_map()): v for k, v in denoiser.state_dict().items()}
    missing, unexpected = ours.load_state_dict({k: v for k, v in state.items() if k is not None}, strict=False)
    assert missing == ["null_token"] and not unexpected, (missing, unexpected)
    ours.eval()
    generator = torch.Generator().manual_seed(3)
    noisy = torch.randn(1, 10, 8, 4, 4, generator=generator)
    t = torch.rand(1, 10, generator=generator) * 999
    target = cameras(1, 34, generator)
    tokens = torch.randn(1, 8, 16, generator=generator)
    with torch.no_grad():
        out = ours(noisy, t, target, tokens)
        ref, _ = denoiser._forward(types.DenoiserInputs(
            view=noisy, pose=types.CameraInputs(target.intrinsics.clone(), target.extrinsics.clone()), timestep=t,
            state=denoiser.cnd_proj(tokens)), temporal_downsample=4)
        flipped = cls(cls.Config(**{**config.__dict__, "camera_legacy_channel_order": False}), in_channels=8,
                      latent_size=(4, 4), token_dim=16, latent_spec=ours.latent_spec)
        flipped.load_state_dict(ours.state_dict())
        without_switch = flipped.eval()(noisy, t, target, tokens)
    return {"renderer (Wan structure), max |diff|": (out - ref).abs().max().item(),
            "renderer (Wan) without the channel-order switch, max |diff|": (without_switch - ref).abs().max().item()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    results = {**compare_re10k(args.official), **compare_wan(args.official)}
    for name, value in results.items():
        print(f"{name:<62} {value:.3e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
