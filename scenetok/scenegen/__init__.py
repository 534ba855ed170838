"""SceneGen: generate a scene's tokens from one to three images and anchor cameras, then render
them with a frozen SceneTok.

* :mod:`scenetok.scenegen.core` -- network- and sampler-independent pieces (relativisation,
  conditioning dropout, training loss, classifier-free guidance, the sampling loop);
* :mod:`scenetok.scenegen.model` -- :class:`~scenetok.scenegen.model.SceneGen`, the frozen SceneTok
  plus a trainable scene generator, as the training loop uses it;
* :mod:`scenetok.scenegen.runs` -- SceneGen recipes and runs (checks, summary, building, loading);
* :mod:`scenetok.scenegen.generate` / :mod:`~scenetok.scenegen.evaluate` /
  :mod:`~scenetok.scenegen.jobs` -- ``scenetok generate``, ``eval`` and ``render --tokens``;
* :mod:`scenetok.scenegen.hooks` -- the CLI command and recipe check, registered through the
  ``scenetok.hooks`` entry point like a plugin's.

The recipe section is :class:`scenetok.sections.SceneGenConfig`; the generator networks are
components of the ``scene_generator`` kind (:class:`scenetok.interfaces.SceneGenerator`).
"""
