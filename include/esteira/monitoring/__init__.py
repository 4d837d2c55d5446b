"""Monitoring: sampled drift and quality reports, their history, and the retraining rule."""
