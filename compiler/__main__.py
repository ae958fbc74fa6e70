"""`python -m tinyc` is the `tinyc` command."""
import sys

from tinyc.cli import main

sys.exit(main())
