"""Guards a Python subprocess of a guarded test (``LEUKEDGE_NETGUARD`` set): see
``leukedge_netguard``."""

import os

if os.environ.get("LEUKEDGE_NETGUARD"):
    import leukedge_netguard

    leukedge_netguard.install(owner=False)
    leukedge_netguard.start()
