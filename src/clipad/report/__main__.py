"""`python -m clipad.report DIR [DIR ...]`: see clipad.cli.report."""
from clipad.cli.report import main

main()
