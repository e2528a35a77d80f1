"""Developer scripts: the local Airflow platform and the demo."""
