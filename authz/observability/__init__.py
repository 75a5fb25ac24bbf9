"""What every Check leaves behind: its span (tracing, exporters), metrics
(metrics, worker_metrics), its audit record (audit), log lines (logs,
decision_log), tied to each Check by observe."""
