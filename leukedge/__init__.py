"""leukedge: B-ALL blood-smear classification from notebook to Raspberry Pi."""

__version__ = "0.1.0"
