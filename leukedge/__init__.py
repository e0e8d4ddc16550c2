"""leukedge: B-ALL blood-smear classification from notebook to Raspberry Pi."""

import time

__version__ = "0.1.0"

#: ``time.perf_counter()`` when leukedge was first imported (cold-start reference).
IMPORTED_AT = time.perf_counter()
