"""`python -m starcli` is the `starlight` command."""

import sys

from starcli.cli import main

sys.exit(main())
