"""VA-VAE checkpoint conversion (LDM names -> diffusers AutoencoderKL) against an independent LDM-style
reference network written here, with the real LDM key names and VA-VAE's topology at reduced widths."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scenetok.components.image_compressors.vavae import VAVAE, build_autoencoder
from scenetok.convert.vavae import (
    CheckpointConversionError,
    convert_ldm_vae_state_dict,
    load_ldm_checkpoint,
    load_state_dict_exactly,
    main,
)

# VA-VAE topology (5 levels, attention in the lowest-resolution level, 2 resnets per level) at
# CPU-test widths.
WIDTHS = [16, 16, 16, 16, 32]
GROUPS = 8
LAYERS = 2
LATENT = 4


# ----------------------------------------------------------------------------------------------
# A small LDM-layout KL autoencoder (the structure of LDM's `Encoder`/`Decoder`), written for this test.
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Arch:
    widths: tuple[int, ...] = tuple(WIDTHS)
    layers: int = LAYERS
    latent: int = LATENT
    groups: int = GROUPS


def _norm(arch: _Arch, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(arch.groups, channels, eps=1e-6)


class _Resnet(nn.Module):
    def __init__(self, arch: _Arch, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(arch, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(arch, cout), nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class _Attention(nn.Module):
    def __init__(self, arch: _Arch, channels: int):
        super().__init__()
        self.norm = _norm(arch, channels)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x):
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (t.reshape(b, c, h * w) for t in (self.q(y), self.k(y), self.v(y)))
        weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)  # (b, hw, hw)
        out = (v @ weights.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj_out(out)


class _Down(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class _Up(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, arch: _Arch, channels: int):
        super().__init__()
        self.block_1, self.attn_1 = _Resnet(arch, channels, channels), _Attention(arch, channels)
        self.block_2 = _Resnet(arch, channels, channels)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class _LDMEncoder(nn.Module):
    def __init__(self, arch: _Arch):
        super().__init__()
        widths, layers = arch.widths, arch.layers
        self.conv_in = nn.Conv2d(3, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        cin = widths[0]
        for i, cout in enumerate(widths):
            level = nn.Module()
            level.block = nn.ModuleList([_Resnet(arch, cin if j == 0 else cout, cout) for j in range(layers)])
            level.attn = nn.ModuleList([_Attention(arch, cout) for _ in range(layers)] if i == len(widths) - 1 else [])
            if i != len(widths) - 1:
                level.downsample = _Down(cout)
            self.down.append(level)
            cin = cout
        self.mid = _Mid(arch, cin)
        self.norm_out, self.conv_out = _norm(arch, cin), nn.Conv2d(cin, 2 * arch.latent, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class _LDMDecoder(nn.Module):
    def __init__(self, arch: _Arch):
        super().__init__()
        widths, layers = arch.widths, arch.layers
        self.num_levels = len(widths)
        cin = widths[-1]
        self.conv_in = nn.Conv2d(arch.latent, cin, 3, padding=1)
        self.mid = _Mid(arch, cin)
        levels: list[nn.Module] = []
        for i in reversed(range(len(widths))):
            cout = widths[i]
            level = nn.Module()
            level.block = nn.ModuleList([_Resnet(arch, cin if j == 0 else cout, cout) for j in range(layers + 1)])
            level.attn = nn.ModuleList([_Attention(arch, cout) for _ in range(layers + 1)] if i == len(widths) - 1 else [])
            if i != 0:
                level.upsample = _Up(cout)
            levels.insert(0, level)  # LDM indexes `up` by level, highest resolution first
            cin = cout
        self.up = nn.ModuleList(levels)
        self.norm_out, self.conv_out = _norm(arch, cin), nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for i in reversed(range(self.num_levels)):
            level = self.up[i]
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class _LDMAutoencoder(nn.Module):
    def __init__(self, arch: _Arch = _Arch()):
        super().__init__()
        self.encoder, self.decoder = _LDMEncoder(arch), _LDMDecoder(arch)
        self.quant_conv = nn.Conv2d(2 * arch.latent, 2 * arch.latent, 1)
        self.post_quant_conv = nn.Conv2d(arch.latent, arch.latent, 1)

    def encode_mean(self, x):
        return self.quant_conv(self.encoder(x)).chunk(2, dim=1)[0]

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


@pytest.fixture(scope="module")
def ldm() -> _LDMAutoencoder:
    torch.manual_seed(0)
    model = _LDMAutoencoder().eval()
    with torch.no_grad():  # perturb every tensor so a swapped/ignored GroupNorm or bias shows up
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


def _config(**overrides) -> VAVAE.Config:
    values = dict(block_out_channels=WIDTHS, layers_per_block=LAYERS, latent_channels=LATENT,
                  norm_num_groups=GROUPS, latent_stats="identity")
    values.update(overrides)
    return VAVAE.Config(**values)


def _released_file(ldm: _LDMAutoencoder, path, state=None):
    """Save like the released file: nested under `state_dict`, with training-only tensors."""
    state = dict(ldm.state_dict() if state is None else state)
    state["loss.discriminator.main.0.weight"] = torch.zeros(2, 3, 4, 4)
    state["loss.discriminator.main.1.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    state["foundation_model.model.blocks.0.attn.qkv.weight"] = torch.zeros(6, 2)
    state["linear_proj.weight"] = torch.zeros(8, LATENT, 1, 1)
    torch.save({"state_dict": state, "epoch": 3}, path)
    return path


def test_every_key_maps_with_nothing_missing(ldm):
    converted = convert_ldm_vae_state_dict(ldm.state_dict())
    expected = build_autoencoder(_config(random_init=True)).state_dict()
    assert sorted(converted) == sorted(expected)
    for key, value in converted.items():
        assert value.shape == expected[key].shape, key
    # the level attention (what the stock diffusers converter drops) is mapped and squeezed
    assert converted["encoder.down_blocks.4.attentions.1.to_q.weight"].shape == (32, 32)
    assert torch.equal(converted["decoder.up_blocks.0.attentions.2.to_out.0.weight"],
                       ldm.state_dict()["decoder.up.4.attn.2.proj_out.weight"][:, :, 0, 0])
    assert torch.equal(converted["decoder.up_blocks.4.resnets.0.conv1.weight"],
                       ldm.state_dict()["decoder.up.0.block.0.conv1.weight"])


def test_converted_model_matches_the_ldm_reference(ldm, tmp_path):
    path = _released_file(ldm, tmp_path / "vavae.pt")
    compressor = VAVAE(_config(checkpoint=str(path)))
    images = torch.rand(2, 3, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        latents = compressor.encode(images)
        reference_latents = ldm.encode_mean(images.reshape(6, 3, 32, 48) * 2 - 1)
        assert latents.shape == (2, 3, LATENT, 2, 3)
        torch.testing.assert_close(latents.reshape(6, LATENT, 2, 3), reference_latents, atol=1e-5, rtol=1e-4)

        decoded = compressor.decode(latents)
        reference = (ldm.decode(reference_latents) * 0.5 + 0.5).clamp(0, 1)
        torch.testing.assert_close(decoded.reshape(6, 3, 32, 48), reference, atol=1e-5, rtol=1e-4)
    assert not any(p.requires_grad for p in compressor.parameters())
    assert not compressor.autoencoder.training and VAVAE.trainable is False


def test_safetensors_cli_round_trip(ldm, tmp_path):
    source = _released_file(ldm, tmp_path / "vavae.pt")
    output = tmp_path / "out" / "vavae.safetensors"
    assert main([str(source), str(output), "--no-verify"]) == 0
    from_pt = VAVAE(_config(checkpoint=str(source)))
    from_st = VAVAE(_config(checkpoint=str(output)))
    for (name, a), (_, b) in zip(from_pt.state_dict().items(), from_st.state_dict().items()):
        assert torch.equal(a, b), name


def test_missing_key_is_refused_by_name(ldm, tmp_path):
    state = dict(ldm.state_dict())
    del state["decoder.up.0.block.0.conv1.weight"]
    path = _released_file(ldm, tmp_path / "vavae.pt", state)
    with pytest.raises(CheckpointConversionError, match=r"1 missing: decoder\.up_blocks\.4\.resnets\.0\.conv1\.weight"):
        VAVAE(_config(checkpoint=str(path)))


def test_unknown_keys_are_refused_by_name(ldm, tmp_path):
    state = dict(ldm.state_dict())
    state["encoder.down.0.block.0.extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointConversionError, match=r"encoder\.down\.0\.block\.0\.extra\.weight"):
        convert_ldm_vae_state_dict(state)

    state = dict(ldm.state_dict())
    state["mystery_head.weight"] = torch.zeros(3)
    path = _released_file(ldm, tmp_path / "vavae.pt", state)
    with pytest.raises(CheckpointConversionError, match=r"mystery_head\.weight"):
        load_ldm_checkpoint(path)


def test_wrong_config_names_shape_mismatches(ldm, tmp_path):
    path = _released_file(ldm, tmp_path / "vavae.pt")
    with pytest.raises(CheckpointConversionError, match=r"shape mismatches: decoder\.conv_norm_out\.bias \(checkpoint \(16,\) vs model \(8,\)\)"):
        VAVAE(_config(checkpoint=str(path), block_out_channels=[8, 16, 16, 16, 32]))


def test_paper_size_checkpoint_layout_converts_and_loads_strictly():
    """The real VA-VAE f16d32 layout (342 tensors, 69.8 M parameters), on the meta device."""
    with torch.device("meta"):
        model = build_autoencoder(VAVAE.Config(random_init=True))
        ldm_paper = _LDMAutoencoder(_Arch(widths=(128, 128, 256, 256, 512), layers=2, latent=32, groups=32))
    assert sum(p.numel() for p in model.parameters()) == 69_836_067
    ldm_state = ldm_paper.state_dict()
    assert len(ldm_state) == len(model.state_dict()) == 342
    assert sum(v.numel() for v in ldm_state.values()) == 69_836_067
    load_state_dict_exactly(model, convert_ldm_vae_state_dict(ldm_state), "paper-size layout")
