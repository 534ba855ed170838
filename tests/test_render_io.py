"""PNG frames, MP4 / GIF video, loss-curve plots."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

import scenetok.render_io as render_io
from scenetok.render_io import frames_to_uint8, loss_curve_png, read_metrics_jsonl, write_frames, write_video


def gradient_frames(count: int = 5, height: int = 17, width: int = 22) -> torch.Tensor:
    """(V, 3, H, W): frame i is brighter by i / count; odd sizes on purpose (H.264 needs even)."""
    ramp = torch.linspace(0, 1, width).expand(height, width)
    return torch.stack(
        [torch.stack([ramp, ramp.flip(-1), torch.full_like(ramp, i / count)]) for i in range(count)]
    )


def test_frames_to_uint8_rounds_and_clamps():
    frames = torch.tensor([-0.5, 0.0, 0.6 / 255, 0.4, 1.0, 2.0]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    before = frames.clone()
    array = frames_to_uint8(frames)
    assert array.shape == (1, 1, 6, 3) and array.dtype == np.uint8
    assert array[0, 0, :, 0].tolist() == [0, 0, 1, 102, 255, 255]
    assert torch.equal(frames, before)
    with pytest.raises(ValueError, match="V, 3, H, W"):
        frames_to_uint8(torch.zeros(3, 4, 4))


def test_write_frames_round_trip(tmp_path):
    frames = gradient_frames()
    paths = write_frames(frames, tmp_path / "frames", prefix="target")
    assert [p.name for p in paths] == [f"target_{i:04d}.png" for i in range(5)]
    for path, expected in zip(paths, frames_to_uint8(frames)):
        with Image.open(path) as image:
            assert np.array_equal(np.asarray(image), expected)


def test_gif_fallback_without_encoder(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(render_io, "video_encoder_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="scenetok.render_io"):
        written = write_video(gradient_frames(), tmp_path / "orbit.mp4", fps=10)
    assert written == tmp_path / "orbit.gif" and not (tmp_path / "orbit.mp4").exists()
    assert "GIF" in caplog.text and "imageio-ffmpeg" in caplog.text
    with Image.open(written) as gif:
        assert gif.n_frames == 5 and gif.size == (22, 17)
        assert gif.info["duration"] == 100
        gif.seek(4)
        last = np.asarray(gif.convert("RGB")).astype(int)
    # palette quantisation is lossy, but the frame content must survive approximately
    assert np.abs(last - frames_to_uint8(gradient_frames())[4].astype(int)).mean() < 6


def test_gif_fallback_when_encoding_fails(tmp_path, monkeypatch, caplog):
    def broken_encoder(*args, **kwargs):
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(render_io, "video_encoder_available", lambda: True)
    monkeypatch.setattr(render_io, "_write_mp4", broken_encoder)
    with caplog.at_level(logging.WARNING, logger="scenetok.render_io"):
        written = write_video(gradient_frames(2), tmp_path / "clip.mp4")
    assert written.suffix == ".gif" and written.exists()
    assert "encoder crashed" in caplog.text
    with pytest.raises(ValueError, match="fps"):
        write_video(gradient_frames(2), tmp_path / "clip.mp4", fps=0)


def test_mp4_when_an_encoder_is_installed(tmp_path):
    """The real encoder path: write an MP4 if imageio-ffmpeg is present, else the GIF fallback."""
    written = write_video(gradient_frames(6), tmp_path / "video.mp4", fps=12)
    if render_io.video_encoder_available():
        import imageio.v2 as imageio

        assert written.suffix == ".mp4"
        reader = imageio.get_reader(written)
        decoded = [frame for frame in reader]
        reader.close()
        assert len(decoded) == 6 and decoded[0].shape == (18, 22, 3)  # padded to even height
    else:
        assert written.suffix == ".gif"
        with Image.open(written) as gif:
            assert gif.n_frames == 6


def test_loss_curve_png(tmp_path):
    path = tmp_path / "run" / "metrics.jsonl"
    path.parent.mkdir()
    lines = [
        json.dumps(
            {"step": s, "loss": 1.0 / (s + 1), "loss_kl": 0.1, "lr": 1e-4 * min(1, s / 10), "note": "x"}
        )
        for s in range(50)
    ]
    lines.append('{"step": 50, "loss": 0.0')  # a run killed mid-write
    path.write_text("\n".join(lines) + "\n")
    assert len(read_metrics_jsonl(path)) == 50

    out = loss_curve_png(path, tmp_path / "plots" / "loss.png")
    with Image.open(out) as image:
        assert image.size == (700, 3 * 240)  # three panels: loss, loss_kl, lr
        pixels = np.asarray(image.convert("L"))
    assert pixels.min() < 100  # something was drawn
    with pytest.raises(ValueError, match="nothing to plot"):
        loss_curve_png(path, tmp_path / "none.png", keys=[])
