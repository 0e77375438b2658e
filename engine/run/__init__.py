"""Running exports: the coordinator (runner), the one commit path (commit), where tasks run (executors, remote) and
what a task does (task). docs/architecture.md describes the run path."""
