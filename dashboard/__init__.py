"""Dash dashboard: browse patches, predictions and saliency maps of a pipeline run.

Run ``histoxai dashboard`` (or ``python -m dashboard``); see :mod:`dashboard.app`.
"""

from dashboard.app import create_app, serve

__all__ = ["create_app", "serve"]
