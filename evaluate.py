"""python evaluate.py ckpt_path=... data=X: see clipad.cli.evaluate."""
from clipad.cli.evaluate import main

if __name__ == "__main__":
    main()
