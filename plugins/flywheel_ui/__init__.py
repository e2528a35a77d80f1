"""Flywheel's Airflow UI: links from step tasks to what they produced, the report server, the cockpit view.

Runs inside Airflow's API server: it imports neither ``ml_tasks`` nor any heavy library (the Airflow image
ships neither); it reads the step summaries from XCom and the files under the data root.
"""
