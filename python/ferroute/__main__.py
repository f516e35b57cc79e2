import sys

from ferroute.cli import main

sys.exit(main())
