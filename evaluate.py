"""python evaluate.py ckpt_path=... data=X: see clipad.cli.evaluate."""
from clipad.cli.entry_points import evaluate_main

if __name__ == "__main__":
    evaluate_main()
