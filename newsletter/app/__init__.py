"""The application layer: the operations the CLI, the web app and the scheduler all call."""
