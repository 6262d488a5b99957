"""How every stage script starts and fails: validated params first, one-line errors, no tracebacks."""

from __future__ import annotations

import sys
from collections.abc import Callable

from .errors import UserError
from .params import Params, load_params


def run(main: Callable[[Params], None]) -> None:
    """Validate all of params.yaml before any work, then run ``main``; a user error exits 2."""
    try:
        main(load_params())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: outputs of this stage were not replaced", file=sys.stderr)
        sys.exit(130)
