"""Convert an LDM-format KL autoencoder checkpoint (VA-VAE, ``vavae-imagenet256-f16d32-dinov2.pt``)
to the parameter names of diffusers' :class:`~diffusers.AutoencoderKL`.

Why a converter of our own: diffusers' stock ``convert_ldm_vae_checkpoint`` only maps the mid-block
attention, so the self-attention blocks VA-VAE has in its lowest-resolution level
(``encoder.down.4.attn.*``, ``decoder.up.4.attn.*``, from ``attn_resolutions=[16]``) are silently
dropped and the model runs with random attention weights. Here every key is mapped by an explicit rule,
and anything left over -- a key no rule knows, a parameter the model expects but the checkpoint lacks,
a shape that disagrees -- raises :class:`CheckpointConversionError` naming the keys.

Key rules (LDM -> diffusers), with ``L`` the number of resolution levels:

=============================================  ======================================================
``{enc,dec}.conv_in|conv_out``                  unchanged
``{enc,dec}.norm_out``                          ``conv_norm_out``
``{enc,dec}.mid.block_{1,2}``                   ``mid_block.resnets.{0,1}``
``{enc,dec}.mid.attn_1``                        ``mid_block.attentions.0``
``encoder.down.{i}.block.{j}``                  ``encoder.down_blocks.{i}.resnets.{j}``
``encoder.down.{i}.attn.{j}``                   ``encoder.down_blocks.{i}.attentions.{j}``
``encoder.down.{i}.downsample.conv``            ``encoder.down_blocks.{i}.downsamplers.0.conv``
``decoder.up.{i}.block.{j}``                    ``decoder.up_blocks.{L-1-i}.resnets.{j}`` (diffusers
                                                counts up blocks from the lowest resolution)
``decoder.up.{i}.attn.{j}``                     ``decoder.up_blocks.{L-1-i}.attentions.{j}``
``decoder.up.{i}.upsample.conv``                ``decoder.up_blocks.{L-1-i}.upsamplers.0.conv``
resnet ``nin_shortcut``                         ``conv_shortcut``
attention ``norm, q, k, v, proj_out``           ``group_norm, to_q, to_k, to_v, to_out.0`` (1x1 conv
                                                weights ``(C, C, 1, 1)`` squeezed to linear ``(C, C)``)
``quant_conv``, ``post_quant_conv``             unchanged
=============================================  ======================================================

The released file also holds training-only tensors (``loss.*``: LPIPS + discriminator,
``foundation_model.*``: the DINOv2 teacher, ``linear_proj.*``: the VF-loss projection); those are
dropped by name before conversion, as LightningDiT's own loader does.

Command line (writes a safetensors file that :class:`~scenetok.components.image_compressors.vavae.VAVAE`
loads directly, after checking it against the paper-size model)::

    python -m scenetok.convert.vavae vavae-imagenet256-f16d32-dinov2.pt vavae-f16d32.safetensors
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from scenetok import registry
from scenetok.weights import CheckpointConversionError, load_state_dict_exactly, name_keys

logger = logging.getLogger(__name__)

#: Prefixes of the autoencoder proper in an LDM checkpoint.
VAE_PREFIXES: tuple[str, ...] = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
#: Prefixes of training-only tensors the released VA-VAE file carries next to the autoencoder.
TRAINING_ONLY_PREFIXES: tuple[str, ...] = ("loss.", "foundation_model.", "linear_proj.")
#: Wrapper keys a checkpoint may nest its state dict under (Lightning / plain training scripts).
NESTING_KEYS: tuple[str, ...] = ("state_dict", "model")

_RESNET_PARTS = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
                 "nin_shortcut": "conv_shortcut"}
_ATTENTION_PARTS = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_PARAM = r"(weight|bias)"

_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"^(encoder|decoder)\.(conv_in|conv_out)\.{_PARAM}$"), "plain"),
    (re.compile(rf"^(encoder|decoder)\.norm_out\.{_PARAM}$"), "norm_out"),
    (re.compile(rf"^(encoder|decoder)\.mid\.block_([12])\.(\w+)\.{_PARAM}$"), "mid_resnet"),
    (re.compile(rf"^(encoder|decoder)\.mid\.attn_1\.(\w+)\.{_PARAM}$"), "mid_attention"),
    (re.compile(rf"^encoder\.down\.(\d+)\.block\.(\d+)\.(\w+)\.{_PARAM}$"), "down_resnet"),
    (re.compile(rf"^encoder\.down\.(\d+)\.attn\.(\d+)\.(\w+)\.{_PARAM}$"), "down_attention"),
    (re.compile(rf"^encoder\.down\.(\d+)\.downsample\.conv\.{_PARAM}$"), "downsample"),
    (re.compile(rf"^decoder\.up\.(\d+)\.block\.(\d+)\.(\w+)\.{_PARAM}$"), "up_resnet"),
    (re.compile(rf"^decoder\.up\.(\d+)\.attn\.(\d+)\.(\w+)\.{_PARAM}$"), "up_attention"),
    (re.compile(rf"^decoder\.up\.(\d+)\.upsample\.conv\.{_PARAM}$"), "upsample"),
    (re.compile(rf"^(quant_conv|post_quant_conv)\.{_PARAM}$"), "quant"),
]


def map_ldm_key(key: str, num_levels: int) -> str | None:
    """The diffusers name of one LDM autoencoder key, or ``None`` if no rule matches it."""
    for pattern, rule in _RULES:
        match = pattern.match(key)
        if match is None:
            continue
        groups = match.groups()
        if rule in ("plain", "quant"):
            return key
        if rule == "norm_out":
            return f"{groups[0]}.conv_norm_out.{groups[1]}"
        if rule == "mid_resnet":
            part = _RESNET_PARTS.get(groups[2])
            return None if part is None else f"{groups[0]}.mid_block.resnets.{int(groups[1]) - 1}.{part}.{groups[3]}"
        if rule == "mid_attention":
            part = _ATTENTION_PARTS.get(groups[1])
            return None if part is None else f"{groups[0]}.mid_block.attentions.0.{part}.{groups[2]}"
        if rule == "down_resnet":
            part = _RESNET_PARTS.get(groups[2])
            return None if part is None else f"encoder.down_blocks.{groups[0]}.resnets.{groups[1]}.{part}.{groups[3]}"
        if rule == "down_attention":
            part = _ATTENTION_PARTS.get(groups[2])
            return None if part is None else f"encoder.down_blocks.{groups[0]}.attentions.{groups[1]}.{part}.{groups[3]}"
        if rule == "downsample":
            return f"encoder.down_blocks.{groups[0]}.downsamplers.0.conv.{groups[1]}"
        # Decoder: LDM numbers levels from the highest resolution, diffusers from the lowest.
        block = num_levels - 1 - int(groups[0])
        if block < 0:
            return None
        if rule == "up_resnet":
            part = _RESNET_PARTS.get(groups[2])
            return None if part is None else f"decoder.up_blocks.{block}.resnets.{groups[1]}.{part}.{groups[3]}"
        if rule == "up_attention":
            part = _ATTENTION_PARTS.get(groups[2])
            return None if part is None else f"decoder.up_blocks.{block}.attentions.{groups[1]}.{part}.{groups[3]}"
        if rule == "upsample":
            return f"decoder.up_blocks.{block}.upsamplers.0.conv.{groups[1]}"
    return None


def _num_levels(state: Mapping[str, Tensor]) -> int:
    levels = {int(k.split(".")[2]) for k in state if k.startswith("encoder.down.")}
    if not levels:
        raise CheckpointConversionError(
            "the checkpoint has no 'encoder.down.*' keys: it is not an LDM-format KL autoencoder "
            f"(first keys: {name_keys(sorted(state), 8)})"
        )
    return max(levels) + 1


def convert_ldm_vae_state_dict(ldm_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename every key of an LDM autoencoder state dict to diffusers' ``AutoencoderKL`` names.

    Args:
        ldm_state: autoencoder tensors only (``encoder.* / decoder.* / quant_conv.* /
            post_quant_conv.*``; see :func:`load_ldm_checkpoint` to get them from a released file).

    Returns:
        A new dict (the input is not modified); attention projection weights are reshaped from 1x1
        conv ``(C, C, 1, 1)`` to linear ``(C, C)``.

    Raises:
        CheckpointConversionError: some keys match no rule (all of them are named).
    """
    num_levels = _num_levels(ldm_state)
    converted: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for key in sorted(ldm_state):
        new_key = map_ldm_key(key, num_levels)
        if new_key is None:
            unmapped.append(key)
            continue
        value = ldm_state[key]
        is_attention_projection = (".attn" in key) and not key.split(".")[-2] == "norm" and key.endswith("weight")
        if is_attention_projection and value.ndim == 4:
            if value.shape[2:] != (1, 1):
                raise CheckpointConversionError(
                    f"attention projection {key} has shape {tuple(value.shape)}, expected a 1x1 conv (C, C, 1, 1)"
                )
            value = value.reshape(value.shape[0], value.shape[1])
        if new_key in converted:
            raise CheckpointConversionError(f"two checkpoint keys map to {new_key} (second: {key})")
        converted[new_key] = value
    if unmapped:
        raise CheckpointConversionError(
            f"{len(unmapped)} checkpoint key(s) match no LDM->diffusers rule: {name_keys(unmapped)}"
        )
    return converted


def load_ldm_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Read the autoencoder tensors of an LDM-format ``.pt``/``.ckpt``/``.safetensors`` file.

    Tensors only: ``torch.load(weights_only=True)`` (never unpickles code) or safetensors. A state dict
    nested under ``state_dict`` / ``model`` is unwrapped; training-only tensors
    (:data:`TRAINING_ONLY_PREFIXES`) are dropped and counted in the log.

    Raises:
        CheckpointConversionError: the file holds no tensor dict, or keys that are neither autoencoder
            weights nor known training-only extras (named).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw: object = load_file(str(path))
    else:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    while isinstance(raw, Mapping):
        nested = [k for k in NESTING_KEYS if k in raw and isinstance(raw[k], Mapping)]
        if not nested or any(k.startswith(VAE_PREFIXES) for k in raw):
            break
        raw = raw[nested[0]]
    if not isinstance(raw, Mapping):
        raise CheckpointConversionError(f"{path}: expected a dict of tensors, got {type(raw).__name__}")
    state: dict[str, Tensor] = {}
    dropped = 0
    foreign: list[str] = []
    for key, value in raw.items():
        if key.startswith(TRAINING_ONLY_PREFIXES):
            dropped += 1
        elif key.startswith(VAE_PREFIXES) and isinstance(value, Tensor):
            state[key] = value
        else:
            foreign.append(str(key))
    if foreign:
        raise CheckpointConversionError(
            f"{path}: {len(foreign)} key(s) are neither autoencoder weights ({', '.join(VAE_PREFIXES)}) nor "
            f"known training-only tensors ({', '.join(TRAINING_ONLY_PREFIXES)}): {name_keys(sorted(foreign))}"
        )
    logger.info("%s: %d autoencoder tensors, %d training-only tensors dropped", path, len(state), dropped)
    return state


def is_ldm_layout(state: Mapping[str, Tensor]) -> bool:
    """Whether a state dict uses LDM names (``encoder.down.0...``) rather than diffusers ones."""
    return any(k.startswith(("encoder.down.", "decoder.up.", "encoder.mid.", "decoder.mid.")) for k in state)


def main(argv: list[str] | None = None) -> int:
    """CLI: convert an LDM VA-VAE checkpoint to a diffusers-named safetensors file."""
    from safetensors.torch import save_file

    parser = argparse.ArgumentParser(prog="python -m scenetok.convert.vavae", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="LDM-format checkpoint (.pt/.ckpt/.safetensors)")
    parser.add_argument("output", type=Path, help="output .safetensors (diffusers AutoencoderKL names)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the strict load into the paper-size VA-VAE (for non-default widths)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    converted = convert_ldm_vae_state_dict(load_ldm_checkpoint(args.source))
    if not args.no_verify:
        # The component is reached through the registry: core never imports an implementation.
        vavae = registry.get_component("image_compressor", "vavae")
        with torch.device("meta"):
            model = vavae(vavae.Config(random_init=True)).autoencoder
        load_state_dict_exactly(model, {k: v.to("meta") for k, v in converted.items()}, str(args.source))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".tmp")
    save_file({k: v.contiguous() for k, v in converted.items()}, str(tmp),
              metadata={"format": "diffusers.AutoencoderKL", "converted_from": args.source.name})
    tmp.replace(args.output)
    print(f"wrote {len(converted)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
