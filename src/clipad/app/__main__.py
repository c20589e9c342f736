"""`python -m clipad.app ckpt_path=PATH [compare_ckpt_path=PATH] [thresholds=FILE]`: see clipad.app.ui."""
from clipad.cli.entry_points import app_main

if __name__ == "__main__":
    app_main()
