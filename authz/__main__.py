"""`python -m authz` runs the command line."""

import sys

from authz.cli import main

sys.exit(main())
