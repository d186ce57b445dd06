"""A fit too large for memory says what it could not allocate."""
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow  # seconds

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.skipif(os.environ.get("RLHF_SANITIZED") == "1",
                    reason="AddressSanitizer reserves more address space "
                           "than the limit this test sets")
@pytest.mark.skipif(sys.platform == "win32", reason="resource limits")
def test_memory_error_names_what_and_how_much():
    script = textwrap.dedent("""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        import rlhf
        try:
            rlhf.RewardModel().fit(None, [[0, 1]], n_items=10**8)
        except MemoryError as error:
            print(error)
    """)
    # one BLAS and OpenMP thread: each thread's stack counts against the
    # address-space limit, and many cores would use up the margin
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    message = out.stdout.strip()
    # 10^8 strengths: L-BFGS keeps 23 values per parameter and 20 more
    assert message == ("cannot allocate L-BFGS's work space: 2300000020 "
                       "float64 values (17.1 GiB)"), message
