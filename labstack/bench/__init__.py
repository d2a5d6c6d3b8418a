"""bench: "do you need a GPU?": the payload's workloads run in each image and on this host (run), the statistics
and peaks (stats), and the report made from the JSON (report)."""
