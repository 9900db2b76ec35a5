"""`python -m featherface VERB ...` is the same as the `featherface` command."""

import sys

from featherface.cli import main

sys.exit(main())
