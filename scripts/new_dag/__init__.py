"""``python -m scripts.new_dag NAME --shape interval|asset|fanout --step "STEP ARGS..."``: a new DAG.

Writes ``dags/NAME.py`` (the reference pattern of the chosen shape), ``tests/dags/test_NAME.py`` (its
wiring, and one interval under ``dag.test()``) and ``docs/dags/NAME.md`` (a stub to fill in).
"""
