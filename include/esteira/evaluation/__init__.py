"""Evaluation: metrics per problem type and the gate that judges a candidate against the champion."""
