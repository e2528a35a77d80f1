import sys

from scripts.new_dag.cli import main

sys.exit(main())
