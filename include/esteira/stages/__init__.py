"""One module per DAG: the bodies of its tasks as plain typed functions.

A stage function takes what the step means (the use case, a run window, an actor and a
reason, references from the previous step) and returns a reference dict or
``results.NothingToDo``. It never sees Airflow: `esteira.orchestration` translates the
task context into these inputs and the results into XComs, Asset events and skips.
"""
