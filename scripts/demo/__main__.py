import sys

from scripts.demo.cli import main

sys.exit(main())
