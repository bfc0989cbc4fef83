"""The long-running processes (``run``, ``serve``, ``tick``) and the scheduler's jobs."""
