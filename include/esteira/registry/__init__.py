"""The MLflow model registry: every alias and tag change on a registered model lives here."""
