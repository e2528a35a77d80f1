import sys

from scripts.airflow_local.cli import main

sys.exit(main())
