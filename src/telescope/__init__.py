"""telescope: simulation-based inference when every simulation is expensive."""
__version__ = "0.1.0"
