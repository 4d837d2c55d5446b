"""Training: candidate models, the time split, fitting, MLflow tracking and reproduction."""
