"""``python -m wasinn.bench``: the same as ``wasinn bench``."""

from wasinn.cli.bench import bench_command

bench_command(prog_name="wasinn bench")
