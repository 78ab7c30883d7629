"""What agents use to reach models: the completion client paths, their errors, routing."""
