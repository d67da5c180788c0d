"""`python -m vitlab.runs.export <run folder | .ckpt> --to timm|onnx|hub [--out DIR]`."""

import argparse

from ...errors import run_or_exit
from . import FORMATS, export


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vitlab.runs.export", description=__doc__)
    parser.add_argument("run", help="a vitlab run folder or a checkpoint inside one")
    parser.add_argument("--to", choices=FORMATS, required=True)
    parser.add_argument("--out", default=None, help="output folder (default <run>/export/<to>)")
    parser.add_argument("--license", default="apache-2.0", help="--to hub: the model card's license")
    parser.add_argument("--link", default=None,
                        help="--to hub: the training code's address, linked in the card")
    args = parser.parse_args(argv)
    options = {"license": args.license, "link": args.link} if args.to == "hub" else {}
    out = run_or_exit(export, args.run, args.to, args.out, **options)
    print(f"exported {args.run} -> {out}")


if __name__ == "__main__":
    main()
