"""What the web dashboard (``<api prefix>/ui/``) reads beyond the 0.10 API: the activity of the
last hour, one newest-first listing of 0.10 and TES tasks, and one task with its containers.

Pure decisions (bucketing, cursors, filters) are functions of their inputs; the reads are
bounded (an index walk with a limit).  Nothing here imports the web layer."""
