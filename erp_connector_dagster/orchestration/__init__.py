"""Orchestration logic behind the sensors and the on-call commands.

change_cursor: what a change sensor remembers between ticks (pending runs, watermarks).
coverage:      which day partitions are synced, failed or missing, from sync_jobs and tables.
backfill:      partition ranges in bounded runs, through the daemon or in process.
reprocess:     re-run the partitions of failed sync jobs.
status:        per-connection health for on-call.
"""
