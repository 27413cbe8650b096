"""Dash dashboard: browse patches, predictions and saliency maps of a pipeline run.

Run ``histoxai dashboard`` (or ``python -m histoxai.dashboard``); see :mod:`histoxai.dashboard.app`.
"""

from histoxai.dashboard.app import create_app, serve

__all__ = ["create_app", "serve"]
