"""How every stage script starts and fails: validated params first, one-line errors, no tracebacks.

A stage script calls :func:`validate` before its heavy imports: TensorFlow prints start-up lines
(its CPU kernels, oneDNN) when it loads, and a mistyped key must cost the user one line, not six.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator

from .errors import UserError
from .params import Params, load_params

# Before TensorFlow loads: its info and warning lines are noise in a stage's log (errors still show).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: outputs of this stage were not replaced", file=sys.stderr)
        sys.exit(130)


@functools.cache
def _params() -> Params:
    return load_params()


def validate() -> Params:
    """Check all of params.yaml; a problem exits 2 with one line, before anything heavy is imported."""
    with _user_errors():
        return _params()


SMALL_IMAGES = 64  # px: at 48 px Eigen's kernels trained 1.5x faster than oneDNN's, at 224 px half as fast


def choose_cpu_kernels(onednn: bool | str, image_size: int) -> None:
    """Set ``train.onednn`` for TensorFlow, which reads it once when it loads: call before importing it.

    An explicit ``TF_ENABLE_ONEDNN_OPTS`` wins, so tests and benchmarks can force either path. The
    evaluate stage scores with the kernels the model trained with.
    """
    if "TF_ENABLE_ONEDNN_OPTS" in os.environ:
        return
    if onednn == "auto":
        if image_size > SMALL_IMAGES:
            return  # TensorFlow's own choice: oneDNN where the CPU has AVX-512 VNNI/BF16 or AMX
        onednn = False  # small images: many small operations, where oneDNN's overhead per call dominates
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if onednn else "0"


def run(main: Callable[[Params], None]) -> None:
    """Run ``main`` on the validated params; a user error exits 2 with one line."""
    with _user_errors():
        main(_params())
