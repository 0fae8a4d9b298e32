"""`gpufleet bench`: load generation (load.py), statistics (stats.py, pure), the report (report.py), plots
(plot.py) and the latest report the web console shows (latest.py)."""
