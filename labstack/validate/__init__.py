"""validate: is this machine ready, and are the images what they claim? The checks it ships (checks/), the
pytest plugin they run under (plugin), the parallel run per target (run) and its report (report)."""
