"""The local services: the embedded stack (Airflow, MLflow, model server) and its processes."""
