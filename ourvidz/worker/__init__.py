"""The queue worker for GPU fleets: keys (Redis names, queue routing), payload (the production
job format), store (records, enqueueing, overview), callback, transitions (atomic Lua state
changes) and loop (`ourvidz worker`)."""
