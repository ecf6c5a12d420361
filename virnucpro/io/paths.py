"""Names of the files a run writes in its output directory."""

LOG_NAME = "virnucpro.log"
