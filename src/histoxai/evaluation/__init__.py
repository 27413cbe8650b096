"""Regression reports: metrics per split and per sample (``metrics``), the classical
baseline (``baseline``), figures (``plots``), the report directory (``report``) and the
training stage's outputs (``predictions``). ``histoxai evaluate`` ties them together.
"""
