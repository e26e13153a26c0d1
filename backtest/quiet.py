"""TensorFlow's start-up noise kept off the terminal: its C++ notices filtered out of stderr at import.

A process imports TensorFlow through :func:`import_tensorflow` where it trains (a worker, or the main
process when it trains in-process), so a run whose training happens in worker processes never pays for
(about 7 s and 850 MiB) or prints TensorFlow's import in the main process.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile

#: TensorFlow start-up lines that are not errors. They come from absl's C++ logging *before*
#: ``absl::InitializeLog()`` runs during ``import tensorflow``, which writes every message to fd 2
#: and ignores ``TF_CPP_MIN_LOG_LEVEL`` (cudart_stub.cc: "Could not find cuda drivers on your
#: machine, GPU will not be used."; cpu_feature_guard.cc: "This TensorFlow binary is optimized...").
_TF_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|cudart_stub\.cc|cpu_feature_guard\.cc"
    r"|To enable the following instructions|rebuild TensorFlow with the appropriate compiler flags"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|TF-TRT Warning|oneDNN custom operations are on"
)


def import_tensorflow() -> None:
    """Import TensorFlow once with its C++ start-up notices filtered out of stderr.

    fd 2 is sent to a temporary file during the import; afterwards every captured line that is not a
    known notice (:data:`_TF_NOISE`) is written back to stderr, so real errors still show.
    """
    quiet_env()
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except ImportError:
            pass  # another Keras backend (JAX, PyTorch): nothing to silence
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode("utf-8", "replace").splitlines()
                    if ln.strip() and not _TF_NOISE.search(ln)]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def quiet_env() -> None:
    """TensorFlow's C++ log level for this process and the workers it starts (they inherit it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
