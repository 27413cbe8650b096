"""Measure saliency maps of a regressor and pick the method to trust (``histoxai xai-eval``).

Modules, one metric family each (pure functions on tensors, batched, on the maps' or
model's device):

- ``localisation``: mass/rank accuracy, pointing game, AUROC against the phantom masks
  of the features that truly drive each target; share on distractors (torch, equal to
  Quantus 0.6, which is used with ``backend="quantus"``).
- ``faithfulness``: deletion/insertion curves and ROAD (noisy linear imputation) in the
  target's units; random and Sobel-edge baseline maps.
- ``sanity``: cascading parameter randomisation (Adebayo et al. 2018).
- ``stability``: map change under input noise; agreement between variants of a method.
- ``tissue``: attribution share per tissue class (masks or colour deconvolution),
  binned by target value and by error.
- ``shortcut``: attribution on the border band carrying the phantom's shortcut cue.
- ``similarity``: rank correlation and SSIM used by the above.
- ``suite``: all families for one target; ``ranking``: the documented rule that orders
  methods; ``report``: metrics.json, ranking.json, report.md, CSV tables and plots.
"""
