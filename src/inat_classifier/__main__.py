"""``python -m inat_classifier``: the same as the ``inat-classifier`` command."""

import sys

from .cli import main

sys.exit(main())
