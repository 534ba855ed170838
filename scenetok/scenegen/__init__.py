"""SceneGen: generate a scene's tokens from one to three images and anchor cameras, then render
them with a frozen SceneTok.

* :mod:`scenetok.scenegen.core` -- network- and sampler-independent pieces (relativisation,
  conditioning dropout, training loss, classifier-free guidance, the sampling loop);
* :mod:`scenetok.scenegen.model` -- :class:`~scenetok.scenegen.model.SceneGen`, the frozen SceneTok
  plus a trainable scene generator, as the training loop and the CLI use it.
"""

from scenetok.scenegen.core import (
    SceneGenConfig,
    condition_dropout,
    guided_prediction,
    relative_to_first_condition,
    sample_tokens,
    training_loss,
)

__all__ = [
    "SceneGenConfig",
    "condition_dropout",
    "guided_prediction",
    "relative_to_first_condition",
    "sample_tokens",
    "training_loss",
]
