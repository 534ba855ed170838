"""Every built-in component passes the contract suite of its kind (the same one plugins use)."""

from scenetok.components.decoders.dit import DiTDecoder
from scenetok.components.image_compressors.pixel import PixelCompressor
from scenetok.components.image_compressors.sdvae import SDVAE
from scenetok.components.image_compressors.vavae import VAVAE
from scenetok.components.image_compressors.wan22 import Wan22VAE
from scenetok.components.samplers.ddpm import DDPMSampler
from scenetok.components.samplers.flow import FlowSampler
from scenetok.components.scene_generators.dit import DiTSceneGenerator
from scenetok.components.token_compressors.perceiver import PerceiverCompressor
from scenetok.testing.contracts import (
    DecoderContract,
    ImageCompressorContract,
    SamplerContract,
    SceneGeneratorContract,
    TokenCompressorContract,
)


class TestPixel(ImageCompressorContract):
    component_class = PixelCompressor


class TestSDVAE(ImageCompressorContract):
    component_class = SDVAE

    def make_config(self):
        return SDVAE.Config(random_init=True, block_out_channels=[16, 16], norm_num_groups=8, layers_per_block=1)


class TestVAVAE(ImageCompressorContract):
    component_class = VAVAE

    def make_config(self):
        return VAVAE.default_config("tiny", random_init=True)


class TestWan22(ImageCompressorContract):
    component_class = Wan22VAE
    image_size = (16, 16)

    def make_config(self):
        return Wan22VAE.default_config("tiny", random_init=True)


class TestPerceiver(TokenCompressorContract):
    component_class = PerceiverCompressor

    def make_config(self):
        return PerceiverCompressor.default_config("T", camera_patch_size=0)


class TestDiT(DecoderContract):
    component_class = DiTDecoder

    def make_config(self):
        return DiTDecoder.default_config("T", camera_patch_size=0)


class TestFlow(SamplerContract):
    component_class = FlowSampler


class TestFlowShifted(SamplerContract):
    component_class = FlowSampler

    def make_config(self):
        return FlowSampler.default_config("dl3dv")


class TestDDIM(SamplerContract):
    component_class = DDPMSampler

    def make_config(self):
        return DDPMSampler.Config(solver="ddim", prediction="v")


class TestDDPM(SamplerContract):
    component_class = DDPMSampler

    def make_config(self):
        return DDPMSampler.Config(solver="ddpm", prediction="epsilon", beta_schedule="cosine")


class TestFlowSamplePrediction(SamplerContract):
    component_class = FlowSampler

    def make_config(self):
        return FlowSampler.Config(prediction="sample")


class TestDiTSceneGenerator(SceneGeneratorContract):
    component_class = DiTSceneGenerator

    def make_config(self):
        return DiTSceneGenerator.default_config("T", width=32, heads=2, camera_dropout=0.0)
