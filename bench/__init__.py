"""`make bench`: how fast and how cheap jobbridge is, each figure beside its baseline, measured in
the same run on the same machine. See docs/PERFORMANCE.md for what each figure means."""
