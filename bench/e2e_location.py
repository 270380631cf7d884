"""Code location of ``bench.e2e``'s multiprocess run: the real definitions (executor from
``RECON_EXECUTOR``), with the exchange fetch replaced by the generated frames of
``RECON_BENCH_E2E_SIZE`` fills. The step process imports this module, so the replacement holds in
the process that runs the step too."""

import os

from bench.e2e import install_prebuilt_exchange
from bench.generate import load_cached

install_prebuilt_exchange(lambda: load_cached(int(float(os.environ["RECON_BENCH_E2E_SIZE"]))).partition())

from recon_pipeline.executors import defs  # noqa: E402  (after the replacement, as a step process sees it)

__all__ = ["defs"]
