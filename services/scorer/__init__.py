"""The scorer service: promise clocks and rolling windows over the input topics (faust)."""
