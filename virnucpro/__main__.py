from virnucpro.cli import run

run()
