"""Measure saliency maps of a regressor and say which to trust (``histoxai xai-eval``).

One relevance rule (``relevance``: signed maps, positive for what raises the
prediction) and one ground truth per target (``truth``: signed influence from the
phantom's formulas, counted-nuclei instances) feed every metric family, each a module
of pure functions that declares its metrics beside them (``registry``):

- ``localisation``: mass/rank accuracy, pointing game, AUROC, signed agreement,
  per-nucleus hit rate and evenness, mass on uncounted nuclei and distractors.
- ``faithfulness``: signed deletion/insertion/ROAD curves in target units; Sobel and
  darkness reference maps.
- ``sanity``: cascading parameter randomisation (MPRT on |map|, eMPRT).
- ``stability``: max-sensitivity; agreement between variants of a method.
- ``intervention``: object mass vs the true effect of re-rendering without the object.
- ``resolution``: random and oracle references at each map's native resolution.
- ``tissue``, ``shortcut``, ``nuclei``: what the maps point at (classes, border band,
  per-nucleus properties).
- ``stats``: cluster bootstrap by sample; ``ranking``: the verdict rule.
- ``inputs`` (what the stage reads), ``suite`` (all families for one target),
  ``pipeline`` (one model end to end), ``report`` (metrics/<target>.json, ranking.json, report.md, tables, plots).
"""
