"""`python -m clipad.calibrate`: see clipad.cli.calibrate."""
from clipad.cli.entry_points import calibrate_main

if __name__ == "__main__":
    calibrate_main()
