"""The station's web page (``leukedge serve``): a live view, slide controls, the gallery of
fields with their explanations and the printable slide report, for a technician at the
microscope or on a tablet beside it. Starlette and uvicorn (the ``station`` extra) around
``leukedge.edge.station.Station``; ``leukedge.edge`` never imports this package.
"""
