"""`python -m unirealm`: the same as the `unirealm` command."""

import sys

from unirealm.cli.main import main

sys.exit(main())
