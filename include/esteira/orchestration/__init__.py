"""The only Airflow-aware code the DAG files share: the factory, Assets, Params, context."""
