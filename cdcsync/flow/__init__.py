"""The pipeline of one flow: source -> batcher -> fan-out -> sinks -> acker."""
