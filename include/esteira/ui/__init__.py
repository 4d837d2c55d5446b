"""What the Airflow plugin shows: plain functions that gather a use case's registry,
lineage and monitoring state, and render it as HTML. No Airflow imports here, so all of it
is testable without an Airflow installation (the plugin in ``plugins/`` only wires it)."""
