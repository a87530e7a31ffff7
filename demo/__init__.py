"""The demo and the whole system on one machine (``rj dev`` / ``rj demo``), and the sample traffic the demo,
tests and benchmarks publish. Not part of any service: services never import it."""
